"""Datasets from expert rollouts: SFT conversations, step-grained TSV, converted answers, TFDS.

`generate(out_dir, GenerateConfig(...))` makes tasks, lets the scripted expert play each
one through the episode API, judges every episode by rules and writes, per split:

  tasks/{split}.jsonl             the tasks (query, offered tools, gold facts, relevant tools)
  episodes/{split}.jsonl          per episode: verdict, step rewards, tool recall, mistakes made
  answers/{split}.json            the trajectories as ToolBench converted answers
  step_grained/{split}.tsv        the original step-grained TSV (prompt, response, reward)
  sft/{split}.json                SFT conversations in ToolBench's layout (solved episodes)
  sft/{split}.rendered.jsonl      the same, rendered with the chosen template into
                                  (text, is_action) segments
  tfds/steptool_env/{step_grained,sft}/1.0.0/   array_record TFDS datasets of the two
  summary.json                    the configuration, counts, pass rates, tool recall

All of it is a pure function of the configuration (same seed -> same bytes, except the
timing in summary.json). Every file is written atomically (`data.files.atomic_write`): a
failed or killed run leaves each file either as it was or complete, never torn.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
import time
from typing import Any, Iterable, Sequence

from steptool_jax.data import render
from steptool_jax.data.files import atomic_write
from steptool_jax.data.records import Conversation, StepGrainedRow, Trajectory
from steptool_jax.data.toolbench import write_converted_answers
from steptool_jax.data.tsv import write_step_grained_tsv
from steptool_jax.envs import episode as env
from steptool_jax.envs import expert, judge
from steptool_jax.envs.settings import EnvSettings
from steptool_jax.envs.tasks import SPLITS, Task


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
  """What to generate: the environment's tasks, episodes and rewards (`env`, the section a
  run config shares with evaluation), rendered in the chat `template`. `sft_only_solved`
  keeps only Solved episodes as SFT conversations (the step-grained data keeps every
  episode); `build_tfds` also writes the TFDS datasets."""

  env: EnvSettings
  template: str
  sft_only_solved: bool = True
  build_tfds: bool = True

  @property
  def env_config(self) -> env.EnvConfig:
    return self.env.episode_config(self.template)

  def tasks(self) -> dict[str, tuple[Task, ...]]:
    return self.env.tasks()


@dataclasses.dataclass(frozen=True)
class Example:
  """One task, the expert's episode on it, and the rule judge's verdict."""

  task: Task
  run: expert.ExpertRun
  judgement: judge.Judgement

  @property
  def trajectory(self) -> Trajectory:
    return self.run.episode.trajectory()


def roll_out(tasks: Iterable[Task], config: GenerateConfig) -> list[Example]:
  mistakes = expert.Mistakes(rate=config.env.mistake_rate)
  examples = []
  for task in tasks:
    run = expert.run_expert(task, mistakes=mistakes, seed=config.env.seed, config=config.env_config,
                            thoughts=config.env.thoughts)
    examples.append(Example(task, run, config.env.judge(task, run.episode.trajectory())))
  return examples


def step_grained_row(example: Example, template: str) -> StepGrainedRow:
  """The TSV row of an episode: its prompts and actions, and the rule-shaped step rewards."""
  prompts, responses = render.render_steps(example.trajectory, template,
                                           system_prompt=_system_prompt(example))
  rewards = example.judgement.step_rewards
  if len(rewards) != len(responses):
    raise AssertionError(f"{example.task.task_id}: {len(rewards)} rewards for {len(responses)} steps")
  return StepGrainedRow(prompts=prompts, responses=responses, rewards=rewards)


def sft_conversation(example: Example) -> Conversation:
  return render.trajectory_conversation(example.trajectory, system_prompt=_system_prompt(example))


def _system_prompt(example: Example) -> str:
  """The system text the episode was played with."""
  return env.system_prompt(example.task, tool_descriptions=example.run.episode.config.tool_descriptions)


def _write_jsonl(path: pathlib.Path, records: Iterable[Any]) -> int:
  count = 0
  with atomic_write(path, "w", encoding="utf-8") as f:
    for record in records:
      f.write(json.dumps(record, ensure_ascii=False) + "\n")
      count += 1
  return count


def write_sft_conversations(path: pathlib.Path, conversations: Sequence[Conversation]) -> int:
  """ToolBench's SFT layout (query id -> {cnt, instances: [{id, conversations}]}), one
  instance (the whole dialogue) per query."""
  data = {
      conversation.query_id: {"cnt": 1, "instances": [{
          "id": conversation.id,
          "conversations": [{"from": turn.role, "value": turn.content} for turn in conversation.turns]}]}
      for conversation in conversations}
  with atomic_write(path, "w", encoding="utf-8") as f:
    json.dump(data, f, ensure_ascii=False, indent=1)
  return len(data)


def _episode_record(example: Example) -> dict[str, Any]:
  j = example.judgement
  return {
      "task_id": example.task.task_id, "template": example.task.template,
      "generalization": example.task.generalization, "status": j.status.value,
      "step_rewards": list(j.step_rewards), "succ_calling": list(j.succ_calling),
      "tool_recall": j.tool_recall, "num_steps": example.run.episode.num_steps,
      "mistakes": list(example.run.mistakes)}


def _write_split(out: pathlib.Path, split: str, examples: Sequence[Example], config: GenerateConfig
                 ) -> dict[str, Any]:
  _write_jsonl(out / "tasks" / f"{split}.jsonl", (e.task.to_json() for e in examples))
  _write_jsonl(out / "episodes" / f"{split}.jsonl", (_episode_record(e) for e in examples))
  write_converted_answers(out / "answers" / f"{split}.json", (e.trajectory for e in examples))
  rows = write_step_grained_tsv(out / "step_grained" / f"{split}.tsv",
                                (step_grained_row(e, config.template) for e in examples))
  sft_examples = [e for e in examples if e.judgement.solved or not config.sft_only_solved]
  conversations = [sft_conversation(e) for e in sft_examples]
  write_sft_conversations(out / "sft" / f"{split}.json", conversations)
  _write_jsonl(out / "sft" / f"{split}.rendered.jsonl", (
      {"id": c.id, "query_id": c.query_id, "template": config.template,
       "segments": [[text, is_action] for text, is_action in render.render_conversation(c, config.template)]}
      for c in conversations))
  summary = judge.summarize(e.judgement for e in examples)
  return {
      "tasks": len(examples), "step_grained_rows": rows, "sft_conversations": len(conversations),
      "status": dict(judge.status_counts(e.judgement for e in examples)), **summary,
      "mistakes": dict(sorted(collections.Counter(m for e in examples for m in e.run.mistakes).items())),
  }


def generate(out_dir: str | pathlib.Path, config: GenerateConfig) -> dict[str, Any]:
  """Writes every dataset file under `out_dir` (see the module docstring); returns the summary."""
  start = time.perf_counter()
  out = pathlib.Path(out_dir)
  for sub in ("tasks", "episodes", "answers", "step_grained", "sft"):
    (out / sub).mkdir(parents=True, exist_ok=True)
  splits = config.tasks()
  summary: dict[str, Any] = {"config": dataclasses.asdict(config), "splits": {}}
  for split in SPLITS:
    summary["splits"][split] = _write_split(out, split, roll_out(splits[split], config), config)
  if config.build_tfds:
    from steptool_jax.envs import tfds_builder  # pylint: disable=import-outside-toplevel
    summary["tfds_dir"] = str(tfds_builder.build(out))
  summary["seconds"] = round(time.perf_counter() - start, 3)
  with atomic_write(out / "summary.json", "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=1)
  return summary
