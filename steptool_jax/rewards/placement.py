"""Step rewards onto tokens: the reward of step s lands on the last action token of step s.

Inputs follow docs/conventions.md: ``step_rewards [B, S]``, ``step_ids [B, T]``
(step index on action tokens, -1 elsewhere; the tokens of one step are
contiguous). A step's last action token is an action token whose right
neighbour belongs to another step (or is not an action token, or is past the
end), so placement is elementwise work plus one gather, with no loop over steps.

Weightings:

* ``"paper"`` (default): step k keeps its reward.
* ``"original_code"``: the original trainer's ``compute_rewards`` multiplies the
  reward of step k (0-based) of a T-step row by ``T-1-k``, so the final (IsSolved)
  reward gets weight 0. Kept only as a named compatibility mode.
* ``"final_only"``: only the final reward, on the row's last action token (the
  PPO-with-final-reward baseline).
* ``"summed"``: the sum of all the row's step rewards, on its last action token (the
  "without step-grained optimisation" ablation: same rewards, no step credit).

The number of steps T of a row is ``num_steps[b]`` when given, else one more
than the largest step id in the row. The two agree whenever the final action
survived truncation, which the data pipeline guarantees (it right-truncates the
last action but never drops it), so ``num_steps`` is needed only for rows built
some other way.

Step ids outside ``[0, S)`` place nothing (a jitted function cannot raise; the
data pipeline validates ids).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

Weighting = Literal["paper", "original_code", "final_only", "summed"]
WEIGHTINGS: tuple[str, ...] = ("paper", "original_code", "final_only", "summed")


def last_action_tokens(step_ids: jax.Array) -> jax.Array:
  """``[B, T]`` bool: True on the last action token of every step."""
  following = jnp.concatenate([step_ids[..., 1:], jnp.full_like(step_ids[..., :1], -1)], axis=-1)
  return (step_ids >= 0) & (following != step_ids)


def place_step_rewards(step_rewards: jax.Array, step_ids: jax.Array, weighting: Weighting = "paper", *,
                       num_steps: jax.Array | None = None) -> jax.Array:
  """Token rewards ``[B, T]``: each step's (weighted) reward on its last action token, 0 elsewhere.

  Args:
    step_rewards: ``[B, S]`` shaped reward of every step (0 on padding steps).
    step_ids: ``[B, T]`` int, step index on action tokens, -1 elsewhere.
    weighting: ``"paper"``, ``"original_code"``, ``"final_only"`` or ``"summed"`` (module docstring).
    num_steps: optional ``[B]`` int, the number of steps of each row before
      truncation; used by ``"original_code"``, ``"final_only"`` and ``"summed"``.
  """
  if weighting not in WEIGHTINGS:
    raise ValueError(f"weighting: expected one of {WEIGHTINGS}, found {weighting!r}")
  step_ids = jnp.asarray(step_ids)
  dtype = jnp.promote_types(jnp.asarray(step_rewards).dtype, jnp.float32)
  step_rewards = jnp.asarray(step_rewards, dtype)
  if num_steps is None:
    num_steps = jnp.max(step_ids, axis=-1) + 1
  num_steps = jnp.asarray(num_steps, step_ids.dtype)
  ends = last_action_tokens(step_ids)

  last_token = ends & (step_ids == jnp.max(step_ids, axis=-1, keepdims=True))
  if weighting == "final_only":
    final_reward = jnp.take_along_axis(step_rewards, jnp.maximum(num_steps - 1, 0)[..., None], axis=-1,
                                       mode="fill", fill_value=0)
    return jnp.where(last_token, final_reward, 0)
  if weighting == "summed":
    # Every step of the row counts, also one whose action was truncated away.
    real_step = jnp.arange(step_rewards.shape[-1]) < num_steps[..., None]
    return jnp.where(last_token, jnp.sum(jnp.where(real_step, step_rewards, 0), axis=-1, keepdims=True), 0)

  if weighting == "original_code":
    step_index = jnp.arange(step_rewards.shape[-1], dtype=step_ids.dtype)
    step_rewards = step_rewards * (num_steps[..., None] - 1 - step_index).astype(dtype)
  # Off-action ids (-1) and ids >= S read the fill value 0.
  reward_at_token = jnp.take_along_axis(step_rewards, jnp.where(step_ids >= 0, step_ids, step_rewards.shape[-1]),
                                        axis=-1, mode="fill", fill_value=0)
  return jnp.where(ends, reward_at_token, 0)


def weighted_step_rewards(step_rewards: jax.Array, num_steps: jax.Array, weighting: Weighting = "paper") -> jax.Array:
  """``[B, S]``: the reward each step carries under ``weighting``, per step instead of per token.

  ``place_step_rewards`` puts exactly these on each step's last action token (``"final_only"``
  and ``"summed"`` leave every step but the row's last with 0). Estimators that work on
  steps rather than tokens (the critic-free group advantages) use this form.
  """
  if weighting not in WEIGHTINGS:
    raise ValueError(f"weighting: expected one of {WEIGHTINGS}, found {weighting!r}")
  dtype = jnp.promote_types(jnp.asarray(step_rewards).dtype, jnp.float32)
  step_rewards = jnp.asarray(step_rewards, dtype)
  num_steps = jnp.asarray(num_steps)
  step_index = jnp.arange(step_rewards.shape[-1])
  real_step = step_index < num_steps[..., None]
  step_rewards = jnp.where(real_step, step_rewards, 0)
  last_step = step_index == (num_steps[..., None] - 1)
  if weighting == "final_only":
    return jnp.where(last_step, step_rewards, 0)
  if weighting == "summed":
    return jnp.where(last_step, jnp.sum(step_rewards, axis=-1, keepdims=True), 0)
  if weighting == "original_code":
    return step_rewards * (num_steps[..., None] - 1 - step_index).astype(dtype)
  return step_rewards


def token_rewards(step_rewards: jax.Array, step_ids: jax.Array, action_mask: jax.Array, kl: jax.Array, *,
                  kl_coef: float | jax.Array, weighting: Weighting = "paper",
                  num_steps: jax.Array | None = None) -> jax.Array:
  """The reward tensor GAE consumes: placed step rewards minus ``kl_coef * kl`` on action tokens.

  Args:
    step_rewards, step_ids, weighting, num_steps: as in ``place_step_rewards``.
    action_mask: ``[B, T]`` action mask.
    kl: ``[B, T]`` per-token KL penalty (``steptool_jax.rl.kl.kl_penalty``).
    kl_coef: the KL controller's current value.
  """
  placed = place_step_rewards(step_rewards, step_ids, weighting, num_steps=num_steps)
  penalty = jnp.where(jnp.asarray(action_mask).astype(bool), kl_coef * jnp.asarray(kl, placed.dtype), 0)
  return placed - penalty
