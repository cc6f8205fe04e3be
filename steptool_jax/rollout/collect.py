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
from typing import Any, Sequence

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

  def stats(self) -> dict[str, float]:
    """Means over the rollouts, for logging."""
    summary = judge.summarize(self.judgements)
    stops = collections.Counter(a.stop for r in self.rollouts for a in r.actions)
    actions = max(1, sum(stops.values()))
    outcomes = collections.Counter(o for r in self.rollouts for o in r.outcomes)
    steps = max(1, sum(outcomes.values()))
    return {
        "rollout/episodes": float(len(self.rollouts)),
        "rollout/solved_rate": float(summary["pass_rate"]),
        "rollout/mean_is_solved": float(summary["mean_is_solved"]),
        "rollout/tool_recall": float(summary["tool_recall"]),
        "rollout/failed_call_rate": float(summary["failed_call_rate"]),
        "rollout/steps": float(np.mean([r.num_steps for r in self.rollouts])) if self.rollouts else 0.0,
        "rollout/action_tokens": float(np.mean([len(a.token_ids) for r in self.rollouts for a in r.actions]))
        if self.rollouts else 0.0,
        "rollout/steps_dropped": float(sum(e["steps_dropped"] for e in self.examples)),
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
