"""One tiny random policy per test process (initialising compiles; do it once)."""

from __future__ import annotations

import functools

import jax
import numpy as np

from steptool_jax.models import Policy, init_policy
from steptool_jax.models.config import tiny

TINY = tiny(vocab_size=128, initializer_range=0.1)

# Two rows, one right-padded; every test batch has this shape so compiled functions are reused.
IDS = np.array([[5, 9, 100, 7, 3, 44, 0, 0], [1, 2, 3, 4, 5, 6, 7, 8]], np.int32)
MASK = np.array([[1, 1, 1, 1, 1, 1, 0, 0], [1] * 8], np.int32)


@functools.lru_cache(maxsize=None)
def tiny_policy() -> Policy:
  """Random base weights and a random (non-zero) value head, so values are not trivially 0."""
  policy = init_policy(TINY, jax.random.key(0))
  head = {"kernel": jax.random.normal(jax.random.key(1), (TINY.hidden_size,)), "bias": np.float32(0.25)}
  return Policy(config=TINY, variables={**policy.variables, "value_head": head})
