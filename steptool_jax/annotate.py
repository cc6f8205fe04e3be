"""`python -m steptool_jax.annotate`: trajectories in, the step-grained TSV out.

    python -m steptool_jax.annotate --input=ANSWERS_OR_ANNOTATIONS.json --output=OUT.tsv \\
        --template=toolllama|qwen2|llama3 [--method=rules|annotations|judge]

A method turns an input file into (trajectory, step rewards) pairs; the trajectory is then
rendered in the chosen template, one TSV row per trajectory. Methods live in the `METHODS`
registry, so another annotator (an LLM judge) is one more entry, not a rewrite:

- `rules`: the rule annotator (SuccCalling, LCS Contribution) over converted answers or the
  trajectories of an annotation file; IsSolved from `--is-solved` (`give_up`: give-up ->
  Unsolved, else Unsure; `annotations`: mean judge verdict of `--annotations` or of the
  input; `gold`: `--gold` JSON of query id -> gold answer).
- `annotations`: the paper's formula over existing judge annotations.
- `judge`: asks an LLM judge (any OpenAI-compatible endpoint, `--judge-*` flags, key from
  `OPENAI_API_KEY` or `--judge-api-key-env`) for `--judge-runs` runs per trajectory, then the
  paper's formula; finished runs are cached beside the output, so a rerun resumes.

A method may return a dict of extra counts from its generator; they join the printed counts.

Exit status: 0 when every trajectory was annotated; 2 for bad input or flags, or an output
that cannot be written (nothing is written; an existing output is left as it was); 3 when
the judge failed on some trajectories: the TSV holds the others, the failures are listed on
stderr and in the printed counts, and a rerun asks only for them. The output is checked
before anything is read or asked (its directory exists and is writable, it is not one of
the input files) and replaced atomically at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from typing import Any, Callable, Generator, Iterator, Sequence

from steptool_jax.data.annotations import iter_reward_annotations, read_reward_annotations, trajectory_from_annotation
from steptool_jax.data.errors import DataError
from steptool_jax.data.files import keep_valid, load_json_object
from steptool_jax.data.formats import detect_format
from steptool_jax.data.records import StepGrainedRow, Trajectory
from steptool_jax.data.render import TEMPLATES, render_steps
from steptool_jax.data.toolbench import iter_converted_answers
from steptool_jax.data.tsv import write_step_grained_tsv
from steptool_jax.rewards.is_solved import IsSolvedSource, from_annotations, from_gold_answers, give_up_rule
from steptool_jax.rewards.judge.annotator import annotation_from_runs, judge_trajectories
from steptool_jax.rewards.judge.settings import JudgeSettings, add_judge_arguments, judge_settings_from_args
from steptool_jax.rewards.rules import annotate_by_rules
from steptool_jax.rewards.shaping import step_rewards_from_annotation

EXIT_BAD_INPUT = 2
EXIT_SOME_FAILED = 3  # the output is written without the trajectories the judge failed on
IS_SOLVED_SOURCES = ("give_up", "annotations", "gold")


@dataclasses.dataclass(frozen=True)
class AnnotateOptions:
  """What the methods may need; a new method adds its own fields here."""

  alpha: float = 1.0
  threshold: float = 0.3
  is_solved: str = "give_up"
  annotations: str | None = None
  gold: str | None = None
  skip_invalid: bool = False
  judge: JudgeSettings | None = None


def check_options(options: AnnotateOptions) -> None:
  """Raises ValueError (naming the flag) for option values no method can use."""
  if not (math.isfinite(options.alpha) and options.alpha >= 0):
    raise ValueError(f"--alpha: expected a finite number >= 0 (the weight of SuccCalling against Contribution),"
                     f" found {options.alpha!r}")
  if not (math.isfinite(options.threshold) and 0 <= options.threshold <= 1):
    raise ValueError(f"--threshold: expected a fraction in [0, 1] (the LCS coverage for Contribution 1),"
                     f" found {options.threshold!r}")


def check_output_path(output: str, inputs: dict[str, str | None]) -> None:
  """Raises ValueError unless `output` can be written and is none of the `inputs` (flag -> path).

  Checked before any work, so a typo in --output costs nothing and never replaces an input.
  """
  if not output:
    raise ValueError("--output: expected a file path, found an empty string")
  directory = os.path.dirname(os.path.abspath(output))
  if not os.path.exists(directory):
    raise ValueError(f"--output: expected a file in an existing directory, found no directory {directory}")
  if not os.path.isdir(directory):
    raise ValueError(f"--output: expected a file in an existing directory, found {directory} is not a directory")
  if os.path.isdir(output):
    raise ValueError(f"--output: expected a file path, found the directory {output}")
  if not os.access(directory, os.W_OK | os.X_OK):
    raise ValueError(f"--output: expected a writable directory, found {directory} not writable")
  for flag, path in inputs.items():
    if path and os.path.exists(output) and os.path.exists(path) and os.path.samefile(output, path):
      raise ValueError(f"--output: expected a file other than the input, found the same file as {flag} ({path});"
                       " writing it would replace the input")


Annotated = tuple[Trajectory, tuple[float, ...]]
Method = Callable[[str, AnnotateOptions, list[DataError]], Generator[Annotated, None, dict[str, Any] | None]]


def annotate_with_rules(path: str, options: AnnotateOptions, errors: list[DataError]) -> Iterator[Annotated]:
  """The rule annotator over converted answers (or an annotation file's trajectories)."""
  trajectories = read_trajectories(path, skip_invalid=options.skip_invalid, errors=errors)
  source = is_solved_source(options, input_path=path)
  for trajectory in trajectories:
    yield trajectory, annotate_by_rules(trajectory, source(trajectory), alpha=options.alpha,
                                        threshold=options.threshold)


def annotate_from_annotations(path: str, options: AnnotateOptions, errors: list[DataError]) -> Iterator[Annotated]:
  """The paper's formula over the judge runs of an annotation file."""
  fmt = detect_format(path)
  if fmt != "annotations":
    raise DataError(path, None, "file", f"expected a reward annotation file for --method=annotations, found {fmt}")
  for annotation in read_reward_annotations(path, skip_invalid=options.skip_invalid, errors=errors):
    yield trajectory_from_annotation(annotation), step_rewards_from_annotation(annotation, alpha=options.alpha)


def annotate_with_judge(path: str, options: AnnotateOptions, errors: list[DataError]
                        ) -> Generator[Annotated, None, dict[str, Any]]:
  """The LLM judge's runs over converted answers (or an annotation file's trajectories), then the
  paper's formula; trajectories whose runs failed are left out and listed in the summary."""
  if options.judge is None:
    raise ValueError("judge_model: --method=judge needs --judge-model=NAME (and --judge-base-url for a server"
                     " other than OpenAI's)")
  trajectories = read_trajectories(path, skip_invalid=options.skip_invalid, errors=errors)
  to_judge = [trajectory for trajectory in trajectories if trajectory.num_steps > 0]
  print(options.judge.describe(), file=sys.stderr)
  try:
    results, summary = judge_trajectories(to_judge, options.judge)
  except KeyboardInterrupt:
    print(f"judge: interrupted; finished runs are in {options.judge.cache_path or '(no cache)'}, rerun to resume",
          file=sys.stderr)
    raise
  runs_by_query = {trajectory.query_id: runs for trajectory, runs in zip(to_judge, results)}
  for trajectory in trajectories:
    if trajectory.num_steps == 0:
      yield trajectory, ()  # counted as empty by `annotate`, nothing to ask
      continue
    runs = runs_by_query[trajectory.query_id]
    if runs is not None:
      yield trajectory, step_rewards_from_annotation(annotation_from_runs(trajectory, runs), alpha=options.alpha)
  print(summary.format(), file=sys.stderr)
  return {"judge": summary.to_dict()}


METHODS: dict[str, Method] = {
    "rules": annotate_with_rules,
    "annotations": annotate_from_annotations,
    "judge": annotate_with_judge,
}


def read_trajectories(path: str, *, skip_invalid: bool, errors: list[DataError]) -> list[Trajectory]:
  """Trajectories of a converted-answers file or of a reward annotation file."""
  fmt = detect_format(path)
  if fmt == "converted_answers":
    return keep_valid(iter_converted_answers(path), skip_invalid=skip_invalid, errors=errors)
  if fmt == "annotations":
    return [trajectory_from_annotation(annotation)
            for annotation in keep_valid(iter_reward_annotations(path), skip_invalid=skip_invalid, errors=errors)]
  raise DataError(path, None, "file", f"expected converted answers or reward annotations, found {fmt}")


def is_solved_source(options: AnnotateOptions, *, input_path: str) -> IsSolvedSource:
  """The IsSolved source the options name, always behind the give-up rule."""
  if options.is_solved == "give_up":
    return give_up_rule()
  if options.is_solved == "annotations":
    path = options.annotations or input_path
    return give_up_rule(from_annotations(read_reward_annotations(path)))
  if options.is_solved == "gold":
    if not options.gold:
      raise ValueError("gold: --is-solved=gold needs --gold=FILE (JSON: query id -> gold answer)")
    gold = load_json_object(options.gold, expected="gold answers (query id -> answer text)")
    for query_id, answer in gold.items():
      if not isinstance(answer, str):
        raise DataError(options.gold, query_id, "", f"expected the gold answer text, found {type(answer).__name__}")
    return give_up_rule(from_gold_answers(gold))
  raise ValueError(f"is_solved: expected one of {', '.join(IS_SOLVED_SOURCES)}, found {options.is_solved!r}")


def annotate(input_path: str, output_path: str, *, template: str, method: str = "rules",
             options: AnnotateOptions = AnnotateOptions(), system_prompt: str | None = None,
             errors: list[DataError] | None = None) -> dict[str, int]:
  """Annotates `input_path` and writes the step-grained TSV; returns the counts."""
  if method not in METHODS:
    raise ValueError(f"method: expected one of {', '.join(METHODS)}, found {method!r}")
  check_options(options)
  judge = options.judge
  check_output_path(output_path, {"--input": input_path, "--annotations": options.annotations, "--gold": options.gold,
                                  "--judge-prompt": judge.prompt_path if judge else None,
                                  "--judge-cache": judge.cache_path if judge else None})
  if judge is not None and judge.cache_path:
    check_output_path(judge.cache_path, {"--input": input_path, "--annotations": options.annotations,
                                         "--gold": options.gold, "--judge-prompt": judge.prompt_path})
  errors = [] if errors is None else errors
  empty = 0
  method_counts: dict[str, Any] = {}

  def annotated() -> Iterator[Annotated]:
    method_counts.update((yield from METHODS[method](input_path, options, errors)) or {})

  def rows() -> Iterator[StepGrainedRow]:
    nonlocal empty
    for trajectory, rewards in annotated():
      if trajectory.num_steps == 0:
        empty += 1  # no action at all: nothing to train on
        continue
      prompts, responses = render_steps(trajectory, template, system_prompt=system_prompt)
      yield StepGrainedRow(prompts, responses, rewards)

  written = write_step_grained_tsv(output_path, rows())  # atomic: a failed run leaves the old output
  return {"rows": written, "invalid_rows": len(errors), "empty_trajectories": empty, **method_counts}


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m steptool_jax.annotate",
                                   description="Annotate trajectories with step rewards; write the step-grained TSV.")
  parser.add_argument("--input", required=True, help="converted answers or reward annotations (JSON)")
  parser.add_argument("--output", required=True, help="the step-grained TSV to write")
  parser.add_argument("--template", required=True, choices=TEMPLATES)
  parser.add_argument("--method", default="rules", choices=tuple(METHODS))
  parser.add_argument("--alpha", type=float, default=1.0, help="weight of SuccCalling against Contribution")
  parser.add_argument("--threshold", type=float, default=0.3, help="LCS coverage for Contribution = 1 (rules)")
  parser.add_argument("--is-solved", default="give_up", choices=IS_SOLVED_SOURCES,
                      help="IsSolved source for --method=rules")
  parser.add_argument("--annotations", help="reward annotations for --is-solved=annotations (default: the input)")
  parser.add_argument("--gold", help="JSON of query id -> gold answer for --is-solved=gold")
  parser.add_argument("--system-prompt", help="system text of the rendered prompts (default: the tool list)")
  parser.add_argument("--skip-invalid", action="store_true", help="report and count bad records instead of stopping")
  add_judge_arguments(parser)
  args = parser.parse_args(argv)

  errors: list[DataError] = []
  try:
    options = AnnotateOptions(alpha=args.alpha, threshold=args.threshold, is_solved=args.is_solved,
                              annotations=args.annotations, gold=args.gold, skip_invalid=args.skip_invalid,
                              judge=judge_settings_from_args(args))
    counts = annotate(args.input, args.output, template=args.template, method=args.method, options=options,
                      system_prompt=args.system_prompt, errors=errors)
  except DataError as e:
    print(e.format(), file=sys.stderr)
    return EXIT_BAD_INPUT
  except (ValueError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_BAD_INPUT
  except OSError as e:  # the output (or the judge cache) could not be written after all: disk full, ...
    print(f"error: {e.filename or args.output}: could not write: {e.strerror or e}", file=sys.stderr)
    return EXIT_BAD_INPUT
  for error in errors:
    print(error.format(), file=sys.stderr)
  print(json.dumps({"output": args.output, **counts}))
  failed = counts.get("judge", {}).get("failed", 0)
  if failed:
    print(f"error: the judge failed on {failed} trajectories, left out of {args.output}; "
          "rerun the same command to ask for them again", file=sys.stderr)
    return EXIT_SOME_FAILED
  return 0


if __name__ == "__main__":
  sys.exit(main())
