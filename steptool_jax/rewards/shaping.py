"""The paper's step reward formula applied to judge annotations.

INTERFACE STUB: implemented by the foundation work; signatures are the contract.
"""

from __future__ import annotations

from steptool_jax.data.records import RewardAnnotation


def step_rewards_from_annotation(annotation: RewardAnnotation, *, alpha: float = 1.0) -> tuple[float, ...]:
  """mean over runs of (alpha*SC + Con/5)/(alpha+1) per intermediate step, then mean IsSolved."""
  raise NotImplementedError
