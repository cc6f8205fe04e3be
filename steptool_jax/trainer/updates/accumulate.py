"""Gradient accumulation and the non-finite flag, shared by the PPO and SFT updates.

Gradients of `grad_accum_steps` micro-batches are summed in float32 by a `lax.scan` (one
micro-batch in memory at a time); the caller divides by what the sum should be an average
over (PPO: the micro-batches its ratio guard kept; SFT: the batch's loss tokens) and calls
the optimizer once.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

# grad_fn(trainable, micro_batch, rng) -> ((loss, metrics), grads)
GradFn = Callable[[Any, Mapping[str, jax.Array], jax.Array], tuple[tuple[jax.Array, dict[str, jax.Array]], Any]]


def accumulate_gradients(grad_fn: GradFn, trainable: Any, micro_batches: Mapping[str, jax.Array], rngs: jax.Array,
                         *, keep: Callable[[Mapping[str, jax.Array]], jax.Array] | None = None
                         ) -> tuple[Any, jax.Array, dict[str, jax.Array]]:
  """`(summed gradients, number kept, per-micro-batch metrics [accum, ...])`.

  `micro_batches` holds `[accum, rows, ...]` arrays, `rngs` `[accum]` keys. `keep(metrics)`
  decides per micro-batch whether its gradient counts (default: all); a dropped one adds
  exactly zero (`where`, not a product: its gradient may be non-finite).
  """
  def body(carry, xs):
    grads_sum, kept = carry
    micro, rng = xs
    (_, metrics), grads = grad_fn(trainable, micro, rng)
    if keep is None:
      grads_sum = jax.tree.map(lambda a, g: a + g.astype(a.dtype), grads_sum, grads)
      return (grads_sum, kept + 1.0), metrics
    kept_here = keep(metrics)
    grads_sum = jax.tree.map(lambda a, g: a + jnp.where(kept_here, g, 0).astype(a.dtype), grads_sum, grads)
    return (grads_sum, kept + kept_here.astype(jnp.float32)), metrics

  zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), trainable)
  (grads_sum, kept), metrics = jax.lax.scan(body, (zeros, jnp.zeros((), jnp.float32)), (micro_batches, rngs))
  return grads_sum, kept, metrics


def all_finite(tree: Any) -> jax.Array:
  """True when every float leaf of `tree` is finite."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def nonfinite_flag(trainable: Any, loss: jax.Array, grad_norm: jax.Array) -> jax.Array:
  """1.0 when the update produced a non-finite loss, gradient norm or parameter, else 0.0
  (the loop stops the run before checkpointing such a state)."""
  return 1.0 - (all_finite(trainable) & jnp.isfinite(loss) & jnp.isfinite(grad_norm)).astype(jnp.float32)
