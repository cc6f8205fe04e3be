"""Generalised advantage estimation over token sequences, in two modes.

``mode="token"`` reproduces the original StepTool trainer (TRL's PPO): rewards
and values are zeroed outside the action mask and the backward recursion runs
over every position, so observation tokens count as time steps (each one
decays the advantage by ``gamma * lam`` and bootstraps from a zero value).

``mode="step"`` (default) treats observation tokens as environment transitions.
The recursion runs over the action tokens of a row in order; for consecutive
action positions ``i_k < i_{k+1}``::

    delta_k = r[i_k] + gamma * V[i_{k+1}] - V[i_k]      (V after the last action = 0)
    A_k     = delta_k + gamma * lam * A_{k+1}

Both are one call of ``reverse_linear_recurrence``. In step mode the decay is
``gamma*lam`` on action tokens and 1 elsewhere, so a position off the mask
passes on what comes after it unchanged, and "the value of the next action
token" needs no lookup: with ``X = rec(m * (r - V))`` and ``U = rec(m * V)``
(same decay), ``A_t = X_t + gamma * U_{t+1}`` on action tokens, because ``U_{t+1}``
is the discounted sum of values from the next action token on. ``X`` and ``U``
are solved together, stacked, in one pass. ``docs/rl.md`` has the derivation.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from steptool_jax.rl.recurrence import Method, reverse_linear_recurrence

Mode = Literal["step", "token"]
MODES: tuple[str, ...] = ("step", "token")


def compute_gae(rewards: jax.Array, values: jax.Array, mask: jax.Array, *, gamma: float | jax.Array,
                lam: float | jax.Array, mode: Mode = "step", method: Method = "auto"
                ) -> tuple[jax.Array, jax.Array]:
  """Advantages and returns (not whitened) for right-padded ``[B, T]`` arrays.

  Args:
    rewards: ``[..., T]`` token rewards (placed step rewards plus the KL penalty).
    values: ``[..., T]`` value predictions, aligned as in docs/conventions.md.
    mask: ``[..., T]`` action mask (bool or 0/1 ints); nonzero marks an action token.
    gamma: discount.
    lam: GAE lambda.
    mode: ``"step"`` (default) or ``"token"`` (the original trainer), see the module docstring.
    method: how the backward recursion is solved (``steptool_jax.rl.recurrence``);
      all give the same numbers up to float rounding.

  Returns:
    ``(advantages, returns)``, float32 (or wider if the inputs are), shaped like
    ``rewards``. Step mode: both are 0 off the mask. Token mode, as the original:
    advantages are defined on every position and ``returns = advantages + mask*values``.
  """
  if mode not in MODES:
    raise ValueError(f"mode: expected one of {MODES}, found {mode!r}")
  dtype = jnp.promote_types(jnp.result_type(rewards, values), jnp.float32)
  is_action = jnp.asarray(mask).astype(bool)
  action = is_action.astype(dtype)
  # where, not a product: padding may hold inf/NaN (e.g. log-probs of pad tokens).
  rewards = jnp.where(is_action, jnp.asarray(rewards, dtype), 0)
  values = jnp.where(is_action, jnp.asarray(values, dtype), 0)
  gamma = jnp.asarray(gamma, dtype)
  lam = jnp.asarray(lam, dtype)

  if mode == "token":
    deltas = rewards + gamma * _shift_left(values) - values
    advantages = reverse_linear_recurrence(gamma * lam, deltas, method=method)
    return advantages, advantages + values

  decay = jnp.where(is_action, gamma * lam, jnp.ones((), dtype))
  streams = reverse_linear_recurrence(decay, jnp.stack([rewards - values, values]), method=method)
  advantages = action * (streams[0] + gamma * _shift_left(streams[1]))
  return advantages, advantages + values


def _shift_left(x: jax.Array) -> jax.Array:
  """``y[..., t] = x[..., t + 1]``, 0 at the last position."""
  return jnp.concatenate([x[..., 1:], jnp.zeros_like(x[..., :1])], axis=-1)
