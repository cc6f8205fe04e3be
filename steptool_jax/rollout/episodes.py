"""Batched episodes in lock-step: every unfinished episode gets its next action from one
policy call, the environment answers each, finished episodes drop out.

The environment bounds every episode (`EnvConfig.max_steps`), so the loop runs at most
`max_steps` rounds. Whatever a policy writes is an action the environment answers (an
unparseable one with an error observation), so no model output raises.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from steptool_jax.envs import episode as env
from steptool_jax.envs.tasks import Task
from steptool_jax.rollout.context import encode_texts, policy_context
from steptool_jax.rollout.policies import Action, ActionPolicy, ActionRequest


@dataclasses.dataclass(frozen=True)
class Rollout:
  """One finished episode with the tokens of its dialogue.

  `prompts[i]` is the text shown before action `i` and `prompt_ids[i]` its tokens;
  `actions[i]` is the policy's action `i`; `outcomes[i]` the environment's answer kind
  (`envs.episode.CALLED`, `INVALID_ACTION`, ...). `group` numbers the task within a
  collection: rollouts of the same task share it.
  """

  task: Task
  episode: env.Episode
  prompts: tuple[str, ...]
  prompt_ids: tuple[tuple[int, ...], ...]
  actions: tuple[Action, ...]
  outcomes: tuple[str, ...]
  group: int = 0

  @property
  def num_steps(self) -> int:
    return len(self.actions)

  def segments(self) -> tuple[tuple[tuple[int, ...], bool], ...]:
    """`(token ids, is_action)` in dialogue order: prompt_0, action_0, prompt_1, ..."""
    out = []
    for prompt, action in zip(self.prompt_ids, self.actions):
      out.append((prompt, False))
      out.append((action.token_ids, True))
    return tuple(out)


@dataclasses.dataclass
class _Running:
  task: Task
  group: int
  episode: env.Episode
  prompts: list[str]
  prompt_ids: list[tuple[int, ...]]
  actions: list[Action] = dataclasses.field(default_factory=list)
  outcomes: list[str] = dataclasses.field(default_factory=list)

  def context_segments(self) -> list[tuple[int, ...]]:
    segments: list[tuple[int, ...]] = []
    for i, prompt in enumerate(self.prompt_ids):
      segments.append(prompt)
      if i < len(self.actions):
        segments.append(self.actions[i].token_ids)
    return segments

  def finished(self) -> Rollout:
    return Rollout(task=self.task, episode=self.episode, prompts=tuple(self.prompts),
                   prompt_ids=tuple(self.prompt_ids), actions=tuple(self.actions),
                   outcomes=tuple(self.outcomes), group=self.group)


def run_episodes(tasks: Sequence[Task], policy: ActionPolicy, tokenizer: Any, *, bos_id: int | None,
                 max_context_len: int, env_config: env.EnvConfig = env.EnvConfig(),
                 groups: Sequence[int] | None = None,
                 on_round: Callable[[int, int], None] | None = None) -> list[Rollout]:
  """Plays one episode per task (repeat a task to get several), all in lock-step.

  Returns the rollouts in the order of `tasks`. `groups[i]` is rollout i's group (default i).
  `on_round(round, finished)`, when given, is called after each round of actions with the
  round's number (1, 2, ...) and how many episodes have finished so far (for progress output).
  """
  groups = list(range(len(tasks))) if groups is None else list(groups)
  if len(groups) != len(tasks):
    raise ValueError(f"groups: expected one group per task ({len(tasks)}), found {len(groups)}")
  running = []
  for task, group in zip(tasks, groups):
    episode, prompt = env.reset(task, env_config)
    running.append(_Running(task=task, group=group, episode=episode, prompts=[prompt], prompt_ids=[]))
  for item, ids in zip(running, encode_texts(tokenizer, [r.prompts[0] for r in running])):
    item.prompt_ids.append(tuple(ids))

  active = list(range(len(running)))
  rounds = 0
  while active:
    requests = [ActionRequest(episode=running[i].episode,
                              context_ids=tuple(policy_context(running[i].context_segments(), bos_id=bos_id,
                                                               max_context_len=max_context_len)),
                              episode_id=i)
                for i in active]
    actions = policy(requests)
    if len(actions) != len(requests):
      raise ValueError(f"policy: expected {len(requests)} actions, found {len(actions)}")
    new_prompts: list[tuple[int, str]] = []
    for i, action in zip(active, actions):
      item = running[i]
      item.episode, result = env.step(item.episode, action.text)
      item.actions.append(action)
      item.outcomes.append(result.outcome)
      if not result.done:
        new_prompts.append((i, result.prompt))
    encoded = encode_texts(tokenizer, [prompt for _, prompt in new_prompts])
    for (i, prompt), ids in zip(new_prompts, encoded):
      running[i].prompts.append(prompt)
      running[i].prompt_ids.append(tuple(ids))
    active = [i for i, _ in new_prompts]
    rounds += 1
    if on_round is not None:
      on_round(rounds, len(running) - len(active))
  return [item.finished() for item in running]
