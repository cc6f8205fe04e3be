"""One round of online data: play tasks with a policy, judge by rules, shape into examples.

`collect(tasks, policy, tokenizer, settings)` plays `group_size` episodes of every task
(rollouts of one task share a group id, for the critic-free group advantages), has the
environment's rule judge annotate each (SuccCalling + Contribution per intermediate step,
IsSolved from the gold facts for the last), and turns every rollout into a tokenised example
for the step-grained collate, with its behaviour log-probs and group id.
"""

from __future__ import annotations

import collections
import dataclasses
import statistics
from typing import Any, Mapping, Sequence

import numpy as np

from steptool_jax.envs import episode as env
from steptool_jax.envs import judge
from steptool_jax.envs.settings import EnvSettings
from steptool_jax.envs.tasks import Task
from steptool_jax.rollout.episodes import Rollout, run_episodes
from steptool_jax.rollout.examples import tokenized_example
from steptool_jax.rollout.policies import ActionPolicy


@dataclasses.dataclass(frozen=True)
class RolloutSettings:
  """How episodes are played, judged and packed. `bos_id`, `max_context_len` and
  `max_response_len` should be the data pipeline's, so a rollout is tokenised like a TSV row;
  `environment` is the run's env section and `template` the model's chat format."""

  bos_id: int | None
  max_context_len: int
  max_response_len: int
  environment: EnvSettings
  template: str
  group_size: int = 1

  def __post_init__(self):
    if self.group_size < 1:
      raise ValueError(f"group_size: expected >= 1, found {self.group_size}")

  @property
  def episode_config(self) -> env.EnvConfig:
    return self.environment.episode_config(self.template)

  def judgement(self, rollout: Rollout) -> judge.Judgement:
    """The environment's rule verdict on a rollout, with these reward settings."""
    return self.environment.judge(rollout.task, rollout.episode.trajectory())


def rollout_settings_of(data: Any, environment: EnvSettings, tokenizer: Any, *, group_size: int = 1
                        ) -> RolloutSettings:
  """The settings of a run's (or an evaluation's) episodes from its `data` section (context and
  response lengths, BOS, chat template) and its `env` section."""
  bos_id = None
  if data.add_bos:
    bos_id = tokenizer.bos_token_id
    if bos_id is None:
      raise ValueError("data.add_bos: the tokenizer has no BOS token; set data.add_bos=False")
  return RolloutSettings(bos_id=bos_id, max_context_len=data.max_context_len, max_response_len=data.max_response_len,
                         environment=environment, template=data.template, group_size=group_size)


@dataclasses.dataclass(frozen=True)
class Collected:
  """Judged rollouts and their training examples (same order).

  `examples[i]` is a dict with the step-grained collate's keys (`input_ids`,
  `action_mask`, `step_ids`, `step_rewards`, `num_steps`, truncation counters) plus
  `behaviour_logp` (`[L]`, aligned with `input_ids`) and `group_id`.
  """

  rollouts: tuple[Rollout, ...]
  judgements: tuple[judge.Judgement, ...]
  examples: tuple[dict[str, Any], ...]

  def summaries(self) -> list[dict[str, Any]]:
    """What `rollout_stats` needs of each episode, as JSON (to gather across processes)."""
    return [{"solved": j.solved, "is_solved": j.status.reward, "tool_recall": j.tool_recall,
             "succ_calling": list(j.succ_calling), "num_steps": r.num_steps,
             "action_tokens": [len(a.token_ids) for a in r.actions], "stops": [a.stop for a in r.actions],
             "outcomes": list(r.outcomes), "steps_dropped": e["steps_dropped"]}
            for r, j, e in zip(self.rollouts, self.judgements, self.examples, strict=True)]

  def stats(self) -> dict[str, float]:
    """Means over the rollouts, for logging."""
    return rollout_stats(self.summaries())


def rollout_stats(summaries: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """Means over episodes (`Collected.summaries`, of one process or of all together): pass
  rate, mean IsSolved, tool recall, failed calls, steps, action lengths, and the shares of
  why actions stopped and of the steps' outcomes."""
  calls = [sc for s in summaries for sc in s["succ_calling"]]
  stops = collections.Counter(stop for s in summaries for stop in s["stops"])
  actions = max(1, sum(stops.values()))
  outcomes = collections.Counter(o for s in summaries for o in s["outcomes"])
  steps = max(1, sum(outcomes.values()))
  mean = lambda values: statistics.fmean(values) if values else 0.0  # noqa: E731
  return {
      "rollout/episodes": float(len(summaries)),
      "rollout/solved_rate": float(mean([s["solved"] for s in summaries])),
      "rollout/mean_is_solved": float(mean([s["is_solved"] for s in summaries])),
      "rollout/tool_recall": float(mean([s["tool_recall"] for s in summaries])),
      "rollout/failed_call_rate": float(mean([1 - sc for sc in calls])),
      "rollout/steps": float(np.mean([s["num_steps"] for s in summaries])) if summaries else 0.0,
      "rollout/action_tokens": float(np.mean([n for s in summaries for n in s["action_tokens"]]))
      if summaries else 0.0,
      "rollout/steps_dropped": float(sum(s["steps_dropped"] for s in summaries)),
      **{f"rollout/stop_{k}": v / actions for k, v in sorted(stops.items())},
      **{f"rollout/outcome_{k}": v / steps for k, v in sorted(outcomes.items())},
  }


def grouped(tasks: Sequence[Task], group_size: int) -> tuple[list[Task], list[int]]:
  """Every task `group_size` times in a row, and the group id (task index) of each."""
  return ([task for task in tasks for _ in range(group_size)],
          [i for i in range(len(tasks)) for _ in range(group_size)])


def collect(tasks: Sequence[Task], policy: ActionPolicy, tokenizer: Any, settings: RolloutSettings, *,
            rows: slice = slice(None)) -> Collected:
  """Plays, judges and shapes `group_size` rollouts of every task, or only `rows` of that
  grouped list (a process's share of a batch; the group ids stay those of the whole list)."""
  repeated, groups = grouped(tasks, settings.group_size)
  repeated, groups = repeated[rows], groups[rows]
  rollouts = run_episodes(repeated, policy, tokenizer, bos_id=settings.bos_id,
                          max_context_len=settings.max_context_len, env_config=settings.episode_config, groups=groups)
  judgements = tuple(settings.judgement(r) for r in rollouts)
  examples = []
  for rollout, verdict in zip(rollouts, judgements):
    example, logp = tokenized_example(rollout, verdict.step_rewards, bos_id=settings.bos_id,
                                      max_context_len=settings.max_context_len,
                                      max_response_len=settings.max_response_len)
    examples.append({**example.features(), "behaviour_logp": logp, "group_id": rollout.group})
  return Collected(rollouts=tuple(rollouts), judgements=judgements, examples=tuple(examples))
