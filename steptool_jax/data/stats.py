"""Validation and summary statistics of a data file (the `stats` command)."""

from __future__ import annotations

import os
import statistics
from typing import Any, Sequence

from steptool_jax.data.errors import DataError
from steptool_jax.data.formats import READERS, detect_format
from steptool_jax.data.records import Conversation, RewardAnnotation, StepGrainedRow, Trajectory
from steptool_jax.rewards.shaping import step_rewards_from_annotation


def file_stats(path: str | os.PathLike[str], fmt: str | None = None, *, skip_invalid: bool = False,
               errors: list[DataError] | None = None) -> dict[str, Any]:
  """format, rows, steps per row (min/mean/max), reward summary (min/mean/max, final-step mean).

  Raises:
    DataError: on the first bad record unless `skip_invalid` (then they go to `errors`
      and are counted as `invalid_rows`), and always on a bad file.
  """
  fmt = fmt or detect_format(path)
  if fmt not in READERS:
    raise ValueError(f"format: expected one of {', '.join(READERS)}, found {fmt!r}")
  steps: list[int] = []
  rewards: list[tuple[float, ...]] = []
  invalid = 0
  for record in READERS[fmt](path):
    if isinstance(record, DataError):
      if not skip_invalid:
        raise record
      invalid += 1
      if errors is not None:
        errors.append(record)
      continue
    steps.append(_num_steps(record))
    if isinstance(record, StepGrainedRow):
      rewards.append(record.rewards)
    elif isinstance(record, RewardAnnotation):
      rewards.append(step_rewards_from_annotation(record))
  return {
      "path": os.fspath(path),
      "format": fmt,
      "rows": len(steps),
      "invalid_rows": invalid,
      "steps_per_row": _summary(steps),
      "reward": _reward_summary(rewards) if rewards else None,
  }


def _num_steps(record: Any) -> int:
  if isinstance(record, (StepGrainedRow, Trajectory, RewardAnnotation)):
    return record.num_steps
  if isinstance(record, Conversation):
    return sum(turn.role == "assistant" for turn in record.turns)
  raise TypeError(f"no step count for {type(record).__name__}")


def _summary(values: Sequence[float]) -> dict[str, float] | None:
  if not values:
    return None
  return {"min": min(values), "mean": statistics.fmean(values), "max": max(values)}


def _reward_summary(rewards: Sequence[tuple[float, ...]]) -> dict[str, float | None]:
  every = [reward for row in rewards for reward in row]
  finals = [row[-1] for row in rewards if row]
  summary = _summary(every) or {"min": None, "mean": None, "max": None}
  return {**summary, "final_mean": statistics.fmean(finals) if finals else None}
