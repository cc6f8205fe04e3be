"""Statistics over the action tokens of a batch: masked sums, means, variance, whitening.

All reductions guard their denominators, so an all-zero mask gives zeros (never
NaN) in values and in gradients, which matters inside one jitted update where a
minibatch may happen to hold no action token at all. Positions off the mask are
selected away (not multiplied by 0), so inf/NaN there cannot leak in.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_sum(x: jax.Array, mask: jax.Array, axis: int | tuple[int, ...] | None = None) -> jax.Array:
  # where, not a product: positions off the mask may hold inf/NaN, and must not leak.
  return jnp.sum(jnp.where(mask.astype(bool), x, 0), axis=axis)


def masked_mean(x: jax.Array, mask: jax.Array, axis: int | tuple[int, ...] | None = None) -> jax.Array:
  """Mean of ``x`` over the positions where ``mask`` is 1; 0 when there are none."""
  count = jnp.sum(mask.astype(x.dtype), axis=axis)
  return masked_sum(x, mask, axis) / jnp.maximum(count, 1)


def masked_var(x: jax.Array, mask: jax.Array, *, unbiased: bool = True) -> jax.Array:
  """Variance over the whole masked batch; Bessel-corrected (as the original) when asked.

  With fewer than two masked positions the correction is skipped (the original
  divides by zero there).
  """
  mean = masked_mean(x, mask)
  var = masked_mean(jnp.square(x - mean), mask)
  if unbiased:
    count = jnp.sum(mask.astype(x.dtype))
    var = var * jnp.where(count > 1, count / jnp.maximum(count - 1, 1), 1)
  return var


def masked_whiten(x: jax.Array, mask: jax.Array, *, shift_mean: bool = True, eps: float = 1e-8) -> jax.Array:
  """``(x - mean) / sqrt(var + eps)`` with statistics over the masked batch.

  Args:
    x: any shape, e.g. advantages ``[B, T]``.
    mask: same shape, 1 on the positions that count (action tokens).
    shift_mean: when False the mean is added back (only the scale changes).
    eps: added to the variance, as in the original.

  Returns:
    The whitened values on the mask, 0 elsewhere.
  """
  mean = masked_mean(x, mask)
  whitened = (x - mean) * jax.lax.rsqrt(masked_var(x, mask) + eps)
  if not shift_mean:
    whitened = whitened + mean
  return jnp.where(mask.astype(bool), whitened, 0)


def explained_variance(predictions: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
  """``1 - Var[targets - predictions] / Var[targets]`` over the mask; 0 when Var[targets] is 0."""
  target_var = masked_var(targets, mask, unbiased=False)
  residual_var = masked_var(targets - predictions, mask, unbiased=False)
  has_var = target_var > 0
  return jnp.where(has_var, 1 - residual_var / jnp.where(has_var, target_var, 1), 0)
