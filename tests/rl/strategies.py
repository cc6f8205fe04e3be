"""Hypothesis strategies for step-grained token layouts of a fixed shape.

Shapes are fixed per strategy so the jitted functions under test compile once.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import strategies as st

BATCH = 4
LENGTH = 32
MAX_STEPS = 8


@dataclasses.dataclass(frozen=True)
class Layout:
  step_ids: np.ndarray       # [B, T] int32, -1 off-action
  num_steps: np.ndarray      # [B] int32, steps of the row before truncation
  step_rewards: np.ndarray   # [B, S] float32, 0 on padding steps
  rng_seed: int              # for float arrays (values, log-probs) of the same shape

  @property
  def action_mask(self) -> np.ndarray:
    return (self.step_ids >= 0).astype(np.int32)


@st.composite
def layouts(draw, *, adjacent_steps: bool = True) -> Layout:
  """Rows of: leading non-action tokens, then steps (1-3 tokens each) separated by
  0-3 observation tokens (at least 1 unless `adjacent_steps`), then padding.

  Covers empty rows, single-token steps, gaps, non-action tokens at both ends,
  a row filling the whole length, and leading steps truncated away (their ids
  absent but counted in `num_steps`).
  """
  ids = np.full((BATCH, LENGTH), -1, np.int32)
  num_steps = np.zeros(BATCH, np.int32)
  rewards = np.zeros((BATCH, MAX_STEPS), np.float32)
  min_gap = 0 if adjacent_steps else 1
  for b in range(BATCH):
    dropped = draw(st.integers(0, 2))
    present = draw(st.integers(0, 5))
    row = [-1] * draw(st.integers(0, 2))
    for k in range(present):
      if k:
        row += [-1] * draw(st.integers(min_gap, 3))
      row += [dropped + k] * draw(st.integers(1, 3))
    if draw(st.booleans()) and len(row) < LENGTH:  # sometimes end exactly at the last position
      row = [-1] * (LENGTH - len(row)) + row
    ids[b, :len(row)] = row
    num_steps[b] = dropped + present if present else 0
    rewards[b, :num_steps[b]] = draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.8, 1.0]),
                                              min_size=int(num_steps[b]), max_size=int(num_steps[b])))
  seed = draw(st.integers(0, 2**31 - 1))
  return Layout(ids, num_steps, rewards, seed)
