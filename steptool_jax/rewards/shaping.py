"""The paper's step reward formula applied to judge annotations.

Intermediate step t: `r_t = mean over judge runs of (alpha * SC_t + Con_t / 5) / (alpha + 1)`,
with SuccCalling SC in {0, 1} and Contribution Con in 0..5, so each run's score is in
[0, 1] (alpha = 1 gives `(SC + Con/5) / 2`). Final (Finish) step: `r_T = mean over runs of
IsSolved` with Solved 1, Unsure 0.5, Unsolved 0. With three runs every intermediate reward
is a multiple of 1/30 and every final one a multiple of 1/6, as in the published TSVs.
"""

from __future__ import annotations

import statistics

from steptool_jax.data.annotations import MAX_CONTRIBUTION
from steptool_jax.data.records import RewardAnnotation


def step_reward(succeeded: float, contribution: float, *, alpha: float = 1.0,
                contribution_scale: float = MAX_CONTRIBUTION) -> float:
  """One judge's score of one intermediate step, normalised to [0, 1]."""
  if alpha < 0:
    raise ValueError(f"alpha: expected a weight >= 0, found {alpha}")
  return (alpha * succeeded + contribution / contribution_scale) / (alpha + 1)


def step_rewards_from_annotation(annotation: RewardAnnotation, *, alpha: float = 1.0) -> tuple[float, ...]:
  """mean over runs of (alpha*SC + Con/5)/(alpha+1) per intermediate step, then mean IsSolved.

  A trajectory that ended without Finish has no final step, hence no final reward.
  """
  runs = annotation.runs
  intermediate = tuple(
      statistics.fmean(step_reward(run.succeed_tool_calling[t], run.contributions[t], alpha=alpha)
                       for run in runs)
      for t in range(len(annotation.calls)))
  if annotation.finish is None:
    return intermediate
  return intermediate + (statistics.fmean(run.status.reward for run in runs),)
