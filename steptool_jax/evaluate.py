"""`python -m steptool_jax.evaluate`: a policy on a task split of the built-in environment.

    python -m steptool_jax.evaluate --workdir=RUN_DIR         # a run of ours, with its own settings
    python -m steptool_jax.evaluate --config=configs/evaluate.py --config.policy.path=/ckpt/hf_dir \\
        --config.eval.split=test --config.output_dir=/tmp/eval

Plays one episode per task with KV-cache generation (greedy by default), all episodes in
lock-step batches, judges each by rules and reports, with 95% confidence intervals:

- pass rate: mean IsSolved (Solved 1, Unsure 0.5, Unsolved 0), as the paper's evaluation;
- solved rate (share Solved), tool recall (relevant tools called / relevant tools),
  average steps per episode, failed-call rate (failed intermediate calls / calls);
- the same per generalization group and per template.

With `output_dir` it writes `answers.json` (the trajectories as ToolBench converted answers,
for external evaluators), `episodes.jsonl` (per-task verdicts) and `metrics.json`, each
atomically (a kill leaves the old file or the new one, never half of one). The last
line of standard output is one JSON object with at least `pass_rate`, `tool_recall`,
`episodes` and `split`.

Across processes (`distributed`, e.g. under `python -m steptool_jax.launch_local`), process
p plays tasks p, p + N, p + 2N, ... of the split with its own copy of the policy on its
first local device; the episode records (JSON) are gathered, and process 0 alone computes
the metrics, writes the outputs and prints the JSON line, in task order: the same files and
summary as one process (greedy decoding; sampled actions depend on the batches they were
drawn in).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys
import time
from typing import Any, Sequence

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags
from tqdm.auto import tqdm

from steptool_jax.cli import EXIT_BAD_INPUT, parse_flags, quiet_startup
from steptool_jax.config.evaluation import EvalConfig, parse_eval_config
from steptool_jax.data.errors import DataError
from steptool_jax.data.files import atomic_write
from steptool_jax.data.records import FINISH, ToolCall, Trajectory
from steptool_jax.data.toolbench import converted_answer_record, parse_converted_answer, write_converted_answers
from steptool_jax.envs import judge
from steptool_jax.envs.expert import Mistakes
from steptool_jax.envs.tasks import Task, read_tasks
from steptool_jax.models.generate import SamplingConfig
from steptool_jax.models.policy import Policy
from steptool_jax.models.tokenizer import BUILTIN, load_tokenizer
from steptool_jax.rollout import metrics as metrics_lib
from steptool_jax.rollout.collect import RolloutSettings, rollout_settings_of
from steptool_jax.rollout.episodes import Rollout, run_episodes
from steptool_jax.rollout.policies import ActionPolicy, model_policy, text_policy, width_buckets
from steptool_jax.rollout.scripted import expert_writer, give_up_writer
from steptool_jax.rollout.stopping import action_stops
from steptool_jax.trainer import distributed

HEADLINE = ("pass_rate", "solved_rate", "tool_recall", "steps", "failed_call_rate")
EVAL_DIR = "eval"  # --workdir=RUN writes its outputs to RUN/eval/<split>/ (unless output_dir is set)


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """Rollouts, their verdicts, and the metrics (`rollout.metrics.evaluation_metrics`)."""

  rollouts: tuple[Rollout, ...]
  judgements: tuple[judge.Judgement, ...]
  metrics: dict[str, Any]

  def summary(self, split: str) -> dict[str, Any]:
    return summarize(self.metrics, split)


def summarize(metrics: dict[str, Any], split: str) -> dict[str, Any]:
  """The one-line result: each headline metric's mean and its CI, the counts."""
  out: dict[str, Any] = {"split": split, "episodes": metrics["episodes"]}
  for name in HEADLINE:
    estimate = metrics[name]
    out[name] = estimate["mean"]
    out[f"{name}_ci"] = [estimate["ci_low"], estimate["ci_high"]]
  out["status_counts"] = metrics["status_counts"]
  out["pass_rate_by_generalization"] = {g: m["pass_rate"]["mean"] for g, m in metrics["by_generalization"].items()}
  return out


def evaluate_policy(tasks: Sequence[Task], policy: ActionPolicy, tokenizer: Any,
                    settings: RolloutSettings, *, progress: bool = False) -> Evaluation:
  """One episode per task, judged by rules (`settings.group_size` is ignored).

  `progress`: a bar of finished episodes on stderr, moved after every round of actions."""
  bar = tqdm(total=len(tasks), desc="evaluate", unit="episode", dynamic_ncols=True, disable=not progress)

  def on_round(rounds: int, finished: int) -> None:
    bar.update(finished - bar.n)
    bar.set_postfix_str(f"round {rounds}/{settings.episode_config.max_steps}")  # redraws: a round may finish none

  with bar:
    rollouts = tuple(run_episodes(tasks, policy, tokenizer, bos_id=settings.bos_id,
                                  max_context_len=settings.max_context_len, env_config=settings.episode_config,
                                  on_round=on_round))
  judgements = tuple(settings.judgement(r) for r in rollouts)
  scores = [metrics_lib.EpisodeScore.from_judgement(j, template=r.task.template, steps=r.num_steps)
            for r, j in zip(rollouts, judgements)]
  return Evaluation(rollouts=rollouts, judgements=judgements, metrics=metrics_lib.evaluation_metrics(scores))


# -- building the pieces from the config ------------------------------------------------------

Config = EvalConfig | ml_collections.ConfigDict


def load_tasks(config: Config) -> list[Task]:
  """The evaluated tasks: the split (from a tasks file or regenerated), capped at max_episodes."""
  config = parse_eval_config(config)
  split = config.eval.split
  if config.eval.tasks_file:
    tasks = read_tasks(config.eval.tasks_file)  # DataError naming the line and field (exit 2)
  else:
    tasks = list(config.env.tasks()[split])
  return tasks[:config.eval.max_episodes] if config.eval.max_episodes else tasks


def with_run_settings(config: Config) -> EvalConfig:
  """For `policy.kind=checkpoint` (one of our run directories): the tokenizer, the `data` and
  the `env` sections of that run, as saved with its checkpoint, replace the evaluation
  config's, so the policy acts on the tokens and tasks it was trained on. Other kinds: the
  config as it is."""
  config = parse_eval_config(config)
  if config.policy.kind != "checkpoint":
    return config
  config.policy.check_path()
  from steptool_jax.trainer import policy_init  # noqa: PLC0415
  trained = policy_init.run_config(config.policy.path)
  return dataclasses.replace(config, tokenizer=trained.tokenizer or trained.model.path, data=trained.data,
                             env=trained.env)


def load_policy_tokenizer(config: Config) -> Any:
  """`tokenizer`: "builtin", a directory, or "" for the model's own (`policy.path`)."""
  config = parse_eval_config(config)
  model_path = config.policy.path if config.policy.kind == "hf" else ""
  return load_tokenizer(config.tokenizer, model_path)


def load_model(config: Config, tokenizer: Any) -> Policy:
  """The policy a `hf`, `checkpoint` or `random` config describes."""
  from steptool_jax.models.config import preset  # noqa: PLC0415
  from steptool_jax.models.policy import init_policy  # noqa: PLC0415
  from steptool_jax.models.pretrained import load_pretrained  # noqa: PLC0415
  config = parse_eval_config(config)
  kind, path = config.policy.kind, config.policy.path
  if kind == "random":
    model_config = preset(config.policy.model_preset, vocab_size=len(tokenizer))
    return init_policy(model_config, jax.random.key(config.policy.seed), with_value_head=False)
  config.policy.check_path()
  from steptool_jax.parallel import make_mesh  # noqa: PLC0415
  # This process's first device: with several processes each loads its own replica.
  mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.local_devices()[:1])
  if kind == "hf":
    return load_pretrained(path, with_value_head=False, mesh=mesh)
  from steptool_jax.trainer import policy_init  # noqa: PLC0415
  return policy_init.policy_of_run(path, len(tokenizer), mesh)


def rollout_settings(config: Config, tokenizer: Any) -> RolloutSettings:
  """How the episodes are played and judged: as in training, with this config's sections."""
  config = parse_eval_config(config)
  return rollout_settings_of(config.data, config.env, tokenizer)


def build_policy(config: Config, tokenizer: Any, policy: Policy | None = None) -> ActionPolicy:
  """The acting policy: scripted, or `policy` (loaded from the config when None) generating."""
  config = parse_eval_config(config)
  kind = config.policy.kind
  eos_id = tokenizer.eos_token_id if config.data.eos_after_actions else None
  if kind == "expert":
    return text_policy(expert_writer(Mistakes(rate=config.policy.expert_mistake_rate), seed=config.policy.seed),
                       tokenizer, eos_id=eos_id)
  if kind == "give_up":
    return text_policy(give_up_writer(), tokenizer, eos_id=eos_id)
  policy = policy if policy is not None else load_model(config, tokenizer)
  needed = config.data.max_context_len + config.data.max_response_len
  if needed > policy.config.max_position_embeddings:
    raise ValueError(f"data.max_context_len + data.max_response_len = {needed} exceeds the model's "
                     f"max_position_embeddings ({policy.config.max_position_embeddings})")
  sampling = SamplingConfig(max_new_tokens=config.data.max_response_len, temperature=config.eval.temperature,
                            top_p=config.eval.top_p, pad_id=tokenizer.pad_token_id or 0)
  stops = action_stops(tokenizer, config.data.template, policy.config.eos_token_ids)
  return model_policy(policy, tokenizer, stops, sampling, jax.random.key(config.eval.seed),
                      template=config.data.template, max_batch=config.eval.batch_size,
                      widths=width_buckets(config.data.max_context_len, config.eval.width_bucket),
                      reuse_cache=config.eval.reuse_cache)


# Names written for intermediate calls that have none a reader accepts: an action without a
# function name, and a rejected Finish (only the accepted Finish may be a `Finish` node).
UNNAMED_CALL = "invalid_action"
REJECTED_FINISH = "invalid_finish"


def answer_trajectory(trajectory: Trajectory) -> Trajectory:
  """The trajectory as written to `answers.json`: what the agent did, with the two kinds of
  failed call the converted-answer format cannot name renamed (their error responses stay)."""
  def renamed(call: ToolCall) -> ToolCall:
    if not call.name.strip():
      return dataclasses.replace(call, name=UNNAMED_CALL)
    if call.name == FINISH:
      return dataclasses.replace(call, name=REJECTED_FINISH)
    return call
  return dataclasses.replace(trajectory, calls=tuple(renamed(call) for call in trajectory.calls))


def episode_records(evaluation: Evaluation, indices: Sequence[int]) -> list[dict[str, Any]]:
  """One JSON record per episode, to move between processes: `index` (the task's place in
  the evaluated split), `episode` (its line of episodes.jsonl), `answer` (its converted
  answer record) and `score` (what the metrics need)."""
  records = []
  for index, rollout, verdict in zip(indices, evaluation.rollouts, evaluation.judgements, strict=True):
    trajectory = answer_trajectory(rollout.episode.trajectory())
    score = metrics_lib.EpisodeScore.from_judgement(verdict, template=rollout.task.template, steps=rollout.num_steps)
    records.append({
        "index": index, "query_id": trajectory.query_id, "answer": converted_answer_record(trajectory),
        "score": dataclasses.asdict(score),
        "episode": {
            "task_id": verdict.task_id, "template": rollout.task.template,
            "generalization": verdict.generalization, "status": verdict.status.value,
            "tool_recall": verdict.tool_recall, "num_steps": rollout.num_steps,
            "succ_calling": list(verdict.succ_calling), "step_rewards": list(verdict.step_rewards),
            "outcomes": list(rollout.outcomes), "stops": [a.stop for a in rollout.actions],
            "action_tokens": [len(a.token_ids) for a in rollout.actions]}})
  return records


def records_metrics(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
  return metrics_lib.evaluation_metrics(metrics_lib.EpisodeScore(**r["score"]) for r in records)


def write_outputs(output_dir: str | pathlib.Path, records: Sequence[dict[str, Any]], metrics: dict[str, Any],
                  summary: dict[str, Any]) -> None:
  """answers.json, episodes.jsonl and metrics.json from the episode records (in their order)."""
  out = pathlib.Path(output_dir)
  out.mkdir(parents=True, exist_ok=True)
  write_converted_answers(out / "answers.json", (parse_converted_answer("<episode record>", r["query_id"], r["answer"])
                                                 for r in records))
  with atomic_write(out / "episodes.jsonl") as f:
    for record in records:
      f.write(json.dumps(record["episode"]) + "\n")
  with atomic_write(out / "metrics.json") as f:
    json.dump({"summary": summary, "metrics": metrics}, f, indent=1)


def process_share(num_tasks: int) -> range:
  """The indices of the tasks this process plays: every `process_count`-th, from its index."""
  return range(jax.process_index(), num_tasks, jax.process_count())


def gather_records(records: Sequence[dict[str, Any]], num_tasks: int) -> list[dict[str, Any]]:
  """Every process's episode records, in task order (one process: `records` as they are)."""
  if jax.process_count() == 1:
    return list(records)
  gathered = sorted((r for share in distributed.allgather_json(records) for r in share), key=lambda r: r["index"])
  if [r["index"] for r in gathered] != list(range(num_tasks)):
    raise RuntimeError(f"the processes returned episodes {[r['index'] for r in gathered]}, expected one of each of"
                       f" the {num_tasks} tasks")
  return gathered


def run(config: Config, policy: Policy | None = None) -> dict[str, Any] | None:
  """Loads what the config names, evaluates, writes the outputs; returns the summary.

  With several processes each plays its share of the tasks (`process_share`); process 0
  gathers the episodes, writes the outputs and returns the summary, the others None.
  """
  config = with_run_settings(config)
  if policy is None and config.policy.kind == "hf":
    config.policy.check_path()  # before the tokenizer, which would come from that path
  tokenizer = load_policy_tokenizer(config)
  tasks = load_tasks(config)
  if not tasks:
    raise ValueError(f"eval.split: the {config.eval.split!r} split has no tasks")
  acting = build_policy(config, tokenizer, policy)
  start = time.perf_counter()
  share = process_share(len(tasks))
  records = []
  if share:
    evaluation = evaluate_policy([tasks[i] for i in share], acting, tokenizer, rollout_settings(config, tokenizer),
                                 progress=jax.process_index() == 0)
    records = episode_records(evaluation, share)
  if jax.process_count() > 1:
    logging.info("process %d: played %d of the %d episodes", jax.process_index(), len(records), len(tasks))
  records = gather_records(records, len(tasks))
  if jax.process_index() != 0:
    return None
  metrics = records_metrics(records)
  summary = summarize(metrics, config.eval.split)
  summary["policy"] = config.policy.kind
  elapsed = time.perf_counter() - start
  summary["seconds"] = round(elapsed, 2)
  # Every action's tokens, EOS included: the policy's output whatever stopped it (compilation,
  # prompt prefill and the environment are inside `seconds`, so this is end to end, not decode).
  summary["generated_tokens"] = sum(sum(r["episode"]["action_tokens"]) for r in records)
  summary["generated_tokens_per_s"] = round(summary["generated_tokens"] / elapsed, 2)
  if config.output_dir:
    write_outputs(config.output_dir, records, metrics, summary)
  return summary


def cli_config(config: ml_collections.ConfigDict | None, workdir: str) -> EvalConfig:
  """The evaluation `--config` and `--workdir` describe: `--workdir=RUN` alone evaluates one of
  our runs with its own settings (outputs in RUN/eval/<split>/); with a config file, the run
  replaces only the policy."""
  if config is None and not workdir:
    raise app.UsageError("--config or --workdir is required (e.g. --workdir=RUN_DIR, or"
                         " --config=configs/evaluate.py --config.policy.path=HF_DIR)")
  typed = EvalConfig() if config is None else parse_eval_config(config)  # --workdir: the run brings data and env
  if workdir:
    typed = dataclasses.replace(typed, policy=dataclasses.replace(typed.policy, kind="checkpoint", path=workdir))
    if not typed.output_dir:
      typed = dataclasses.replace(typed, output_dir=os.path.join(workdir, EVAL_DIR, typed.eval.split))
  return typed


def main(argv: Sequence[str]) -> None:
  quiet_startup()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    config = cli_config(flags.FLAGS.config, flags.FLAGS.workdir or "")
    distributed.maybe_initialize(config.distributed)
    logging.info("config:\n%s", config)
    summary = run(config)
  except (DataError, ValueError, OSError) as e:  # bad config values, paths, data: the message names the field or file
    print(f"error: {e}", file=sys.stderr)
    sys.exit(distributed.fail(EXIT_BAD_INPUT))  # multi-process: at once, not after the shutdown barrier
  if summary is None:  # another process reports
    return
  for name in HEADLINE:
    low, high = summary[f"{name}_ci"]
    if summary[name] is None:
      logging.info("%s: undefined (nothing to rate)", name)
    else:
      logging.info("%s = %.4f  (95%% CI %.4f .. %.4f)", name, summary[name], low, high)
  if config.output_dir:
    logging.info("outputs in %s", config.output_dir)
  sys.stdout.write(json.dumps(summary) + "\n")
  sys.stdout.flush()


if __name__ == "__main__":
  # Defined here, not at import: the benchmark imports this module next to the trainer,
  # which has flags of its own.
  config_flags.DEFINE_config_file("config", None, "Evaluation config file (configs/evaluate.py).", lock_config=True)
  flags.DEFINE_string("workdir", None, "A run directory of ours: evaluate its latest policy with its own settings.")
  app.run(main, flags_parser=parse_flags)
