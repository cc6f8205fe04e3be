"""How the updates lay out and count batch rows (shared by PPO and SFT)."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def strided_split(x: jax.Array, parts: int) -> jax.Array:
  """`[rows, ...] -> [parts, rows / parts, ...]` with part i holding rows i, i + parts, ...

  Rows are laid out over the devices in contiguous blocks; a strided split keeps each
  device's rows on that device, so forming the parts moves no data between devices.
  """
  return jnp.swapaxes(x.reshape((x.shape[0] // parts, parts) + x.shape[1:]), 0, 1)


def strided_merge(y: jax.Array) -> jax.Array:
  """The inverse of `strided_split`."""
  return jnp.swapaxes(y, 0, 1).reshape((y.shape[0] * y.shape[1],) + y.shape[2:])


def constrain_rows(x: jax.Array) -> jax.Array:
  """A `[..., rows, length]` array with its rows split over the batch mesh axes (no-op without a mesh)."""
  return nn.with_logical_constraint(x, (None,) * (x.ndim - 2) + ("batch", "length"))


def rows_in_batch(attention_mask: jax.Array) -> jax.Array:
  """Number of real rows (a short last batch is padded with empty ones), float32."""
  return jnp.sum(jnp.any(attention_mask > 0, axis=-1)).astype(jnp.float32)


def in_chunks(fn: Callable[..., Any], chunk_rows: int, *arrays: jax.Array) -> Any:
  """`fn` over chunks of `chunk_rows` rows (one at a time), results back in row order."""
  parts = arrays[0].shape[0] // chunk_rows
  return jax.tree.map(strided_merge, jax.lax.map(lambda xs: fn(*xs), tuple(strided_split(x, parts) for x in arrays)))
