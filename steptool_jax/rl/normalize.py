"""Running moments of a stream of values: the state behind running reward normalisation.

    moments = initial_moments()
    moments = update_moments(moments, returns, mask)     # one batch (only where mask is 1)
    scale   = 1 / running_std(moments)                   # what step rewards are multiplied by

The moments are exactly those of every value seen so far (Chan, Golub and LeVeque's pairwise
combination of count, mean and the sum of squared deviations), not an exponential average,
so the result does not depend on how the stream was cut into batches. The state is three
float32 scalars: it lives in the train state and is checkpointed with it.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

MIN_STD = 1e-8  # below this (or with fewer than two values) the scale is 1: nothing to normalise by


@flax.struct.dataclass
class RunningMoments:
  count: jax.Array  # values seen
  mean: jax.Array
  m2: jax.Array  # sum of squared deviations from the mean


def initial_moments() -> RunningMoments:
  zero = jnp.zeros((), jnp.float32)
  return RunningMoments(count=zero, mean=zero, m2=zero)


def update_moments(moments: RunningMoments, values: jax.Array, mask: jax.Array) -> RunningMoments:
  """The moments after also seeing `values` where `mask` is nonzero."""
  on = jnp.asarray(mask).astype(bool)
  values = jnp.asarray(values, jnp.float32)
  n = jnp.sum(on).astype(jnp.float32)
  batch_mean = jnp.sum(jnp.where(on, values, 0)) / jnp.maximum(n, 1.0)
  batch_m2 = jnp.sum(jnp.where(on, jnp.square(values - batch_mean), 0))
  total = moments.count + n
  delta = batch_mean - moments.mean
  mean = moments.mean + delta * n / jnp.maximum(total, 1.0)
  m2 = moments.m2 + batch_m2 + jnp.square(delta) * moments.count * n / jnp.maximum(total, 1.0)
  return RunningMoments(count=total, mean=mean, m2=m2)


def running_std(moments: RunningMoments) -> jax.Array:
  """The population standard deviation of the values seen; 1 while it is undefined or ~0."""
  std = jnp.sqrt(moments.m2 / jnp.maximum(moments.count, 1.0))
  return jnp.where((moments.count >= 2) & (std > MIN_STD), std, 1.0)
