"""Timing of jitted work for the benchmarks: one untimed first run (compilation), then timed runs
until a count or a deadline, whichever comes first.

The deadline is what lets `device_suite.py` give every part a time budget: a part measures as
many steps as fit before its deadline (at least one once compiled), instead of a fixed count
that may not fit the device window.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass
class Timing:
  first_s: float  # the first run: compilation + one run
  times: list[float]  # the timed runs, seconds each
  out: Any  # the last run's output

  @property
  def median_s(self) -> float:
    return float(np.median(self.times))

  @property
  def best_s(self) -> float:
    return float(min(self.times))


def timed_runs(fn: Callable[[], Any], *, steps: int, deadline: float | None = None) -> Timing:
  """Runs `fn()` once (compile), then up to `steps` timed times; with a `deadline`
  (`time.perf_counter()` seconds), stops before a run that would end past it, keeping
  at least one timed run."""
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  first = time.perf_counter() - start
  times: list[float] = []
  while len(times) < steps:
    if times and deadline is not None and time.perf_counter() + times[-1] > deadline:
      break
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return Timing(first_s=first, times=times, out=out)


def matmul_rate(size: int, dtype: str) -> float:
  """FLOP/s of a jitted square `size`^3 matmul (best of 5): what the device's matmul units
  deliver under XLA, the yardstick of a device without a published peak (a CPU)."""
  a = jnp.ones((size, size), dtype)
  timing = timed_runs(lambda: jnp.matmul(a, a), steps=5)
  return 2.0 * size**3 / timing.best_s
