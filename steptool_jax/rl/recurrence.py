"""Reverse first-order linear recurrences along the time axis.

Every backward pass in this package (GAE in both modes, the "value of the next
action" lookup, discounted returns-to-go) is an instance of

    x[..., t] = inputs[..., t] + decay[..., t] * x[..., t + 1],    x[..., T] = 0,

over the last axis. Keeping that one kernel in one place lets us offer several
formulations that are equal up to float rounding but fast on different hardware:

* ``"scan"``: a reverse ``lax.scan`` over time. One tiny loop iteration per time
  step; on CPU the fastest formulation for a per-position ``decay``.
* ``"associative"``: ``lax.associative_scan`` with the affine-map composition.
  O(log T) depth; the parallel choice for GPU/TPU, where a while loop pays a
  kernel launch per iteration.
* ``"chunked"``: split time into chunks; solve inside every chunk at once, then
  carry the chunk boundaries with a short scan over chunks and fix up. With a
  scalar ``decay`` the in-chunk solve is one small matmul with the Toeplitz
  matrix of decay powers (fastest on CPU for constant decay); with a per-position
  ``decay`` it is an in-chunk associative scan.
* ``"auto"`` (default): on CPU, ``"chunked"`` for a scalar ``decay`` and
  ``"scan"`` for a per-position one (the fastest measured there, see
  ``benchmarks/results/gae_cpu.txt``); on GPU/TPU ``"associative"``, whose
  depth does not grow with T (a loop over T or T/chunk steps would pay a kernel
  launch per step there; not measured in this repository yet).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax

Method = Literal["auto", "scan", "associative", "chunked"]
METHODS: tuple[str, ...] = ("auto", "scan", "associative", "chunked")


def reverse_linear_recurrence(decay: jax.Array | float, inputs: jax.Array, *,
                              method: Method = "auto", chunk_size: int = 32) -> jax.Array:
  """Solves ``x[t] = inputs[t] + decay[t] * x[t+1]`` backwards along the last axis.

  Args:
    decay: a scalar (constant decay, e.g. ``gamma * lam``) or a ``[..., T]``
      array broadcastable to ``inputs`` (per-position decay). It is broadcast
      lazily, so several input streams can share one decay: ``decay [B, T]``
      with ``inputs [2, B, T]`` solves two recurrences in one pass.
    inputs: ``[..., T]``.
    method: one of ``METHODS`` (see the module docstring).
    chunk_size: chunk length of the ``"chunked"`` method.

  Returns:
    ``x`` with the shape and dtype of ``inputs``; ``x[..., T-1] = inputs[..., T-1]``.
  """
  if method not in METHODS:
    raise ValueError(f"method: expected one of {METHODS}, found {method!r}")
  if chunk_size < 1:
    raise ValueError(f"chunk_size: expected a positive chunk length, found {chunk_size}")
  inputs = jnp.asarray(inputs)
  decay = jnp.asarray(decay, inputs.dtype)
  scalar_decay = decay.ndim == 0
  if not scalar_decay:
    if not _broadcasts_to(decay.shape, inputs.shape):
      raise ValueError(f"decay: expected a shape broadcastable to inputs {inputs.shape}, found {decay.shape}")
    # Same rank as inputs (leading 1s), still unbroadcast: each method broadcasts
    # where it must and no earlier.
    decay = decay.reshape((1,) * (inputs.ndim - decay.ndim) + decay.shape)
    decay = jnp.broadcast_to(decay, decay.shape[:-1] + inputs.shape[-1:])
  if inputs.shape[-1] == 0:
    return inputs
  if method == "scan":
    return _scan(decay, inputs)
  if method == "associative":
    return _associative(decay, inputs)
  if method == "chunked":
    return _chunked(decay, inputs, chunk_size)
  # "auto": chosen per backend when the computation is lowered (see the module docstring).
  on_cpu = (lambda a, b: _chunked(a, b, chunk_size)) if scalar_decay else _scan
  return lax.platform_dependent(decay, inputs, cpu=on_cpu, default=_associative)


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
  if len(shape) > len(target):
    return False
  return all(d in (1, t) for d, t in zip(shape[::-1], target[::-1]))


def _scan(decay: jax.Array, inputs: jax.Array) -> jax.Array:
  """Reverse ``lax.scan``, time-major inside (one iteration per time step)."""
  inputs_tm = jnp.moveaxis(inputs, -1, 0)
  if decay.ndim == 0:
    def step(x_next, b):
      x = b + decay * x_next
      return x, x
    xs_in = inputs_tm
  else:
    def step(x_next, ab):
      a, b = ab
      x = b + a * x_next
      return x, x
    xs_in = (jnp.moveaxis(decay, -1, 0), inputs_tm)
  init = jnp.zeros(inputs.shape[:-1], inputs.dtype)
  _, xs = lax.scan(step, init, xs_in, reverse=True)
  return jnp.moveaxis(xs, 0, -1)


def _compose(later, current):
  """Composition of the affine maps ``x -> b + a*x`` of ``current`` after ``later``.

  ``lax.associative_scan(reverse=True)`` hands us the aggregate of the later
  positions first; applying ``current`` to it gives ``b_c + a_c*b_l`` with the
  combined decay ``a_c*a_l``.
  """
  a_later, b_later = later
  a_cur, b_cur = current
  return a_cur * a_later, b_cur + a_cur * b_later


def _associative(decay: jax.Array, inputs: jax.Array) -> jax.Array:
  if decay.ndim == 0:
    decay = jnp.broadcast_to(decay, (1,) * (inputs.ndim - 1) + inputs.shape[-1:])
  _, xs = lax.associative_scan(_compose, (decay, inputs), reverse=True, axis=inputs.ndim - 1)
  return xs


def _chunked(decay: jax.Array, inputs: jax.Array, chunk: int) -> jax.Array:
  """Two-level solve: every chunk from a zero boundary, then the boundaries."""
  *lead, length = inputs.shape
  chunk = min(chunk, length)
  pad = -length % chunk
  num_chunks = (length + pad) // chunk
  widths = [(0, 0)] * len(lead) + [(0, pad)]
  # Padding positions get input 0 and decay 0, so they hold x = 0 and the last
  # real position still sees x[T] = 0.
  b = jnp.pad(inputs, widths).reshape(*lead, num_chunks, chunk)
  if decay.ndim == 0:
    local, through = _chunk_solve_constant(decay, b)
  else:
    a = jnp.pad(decay, widths).reshape(*decay.shape[:-1], num_chunks, chunk)
    through, local = lax.associative_scan(_compose, (a, b), reverse=True, axis=b.ndim - 1)
  # local[..., c, i]: x inside chunk c assuming x = 0 after it; through[..., c, i]:
  # the product of decays from i to the chunk's end, i.e. how much of the value
  # after chunk c reaches position i. The chunk boundaries obey the same
  # recurrence one level up, over num_chunks steps.
  first_through = jnp.broadcast_to(through[..., 0], local.shape[:-1])
  boundary = _scan(first_through, local[..., 0])            # x at the start of each chunk
  after = jnp.concatenate([boundary[..., 1:], jnp.zeros_like(boundary[..., :1])], axis=-1)
  xs = local + through * after[..., None]
  return xs.reshape(*lead, num_chunks * chunk)[..., :length]


def _chunk_solve_constant(decay: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """In-chunk solve for a scalar decay: one matmul with ``L[i, j] = decay**(j-i)``, j >= i."""
  chunk = b.shape[-1]
  i = jnp.arange(chunk)
  gap = i[None, :] - i[:, None]
  powers = jnp.where(gap >= 0, decay ** jnp.maximum(gap, 0).astype(b.dtype), 0)
  # HIGHEST: GPUs/TPUs would otherwise run this dot in TF32/bf16.
  local = jnp.einsum("...j,ij->...i", b, powers.astype(b.dtype), precision=lax.Precision.HIGHEST)
  through = decay ** (chunk - i).astype(b.dtype)
  return local, through
