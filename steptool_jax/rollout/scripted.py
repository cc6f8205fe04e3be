"""Scripted action writers with known outcomes: references for evaluation and tests.

Each is a function `episode -> action text`, to be wrapped by `policies.text_policy`.

- `expert_writer`: the environment's scripted expert (`envs.expert.run_expert`). The expert
  and the environment are deterministic, so its episode is played once per task and its
  actions replayed one by one; an episode that left the expert's path (it cannot, when
  only this writer acts) gives up.
- `give_up_writer`: ends every episode at once with `give_up_and_restart`.
"""

from __future__ import annotations

from typing import Callable

from steptool_jax.data.records import FINISH, GIVE_UP
from steptool_jax.envs import episode as env
from steptool_jax.envs import expert, react

Writer = Callable[[env.Episode], str]

GIVE_UP_ACTION = react.format_action(
    FINISH, react.format_arguments({"return_type": GIVE_UP, "final_answer": "I give up."}),
    "I cannot do this.")


def give_up_writer() -> Writer:
  return lambda episode: GIVE_UP_ACTION


def expert_writer(mistakes: expert.Mistakes = expert.Mistakes(), seed: int = 0) -> Writer:
  played: dict[tuple[str, env.EnvConfig], tuple[str, ...]] = {}

  def write(episode: env.Episode) -> str:
    key = (episode.task.task_id, episode.config)
    if key not in played:
      run = expert.run_expert(episode.task, mistakes=mistakes, seed=seed, config=episode.config)
      played[key] = run.episode.actions
    actions = played[key]
    if episode.num_steps >= len(actions) or episode.actions != actions[:episode.num_steps]:
      return GIVE_UP_ACTION
    return actions[episode.num_steps]

  return write
