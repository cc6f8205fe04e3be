"""Critic-free step advantages: group-normalised step returns-to-go.

For rollouts of the same query (a group), with step rewards ``r[b, s]`` for the
``n_b`` steps of rollout ``b``:

    G[b, s] = sum_{s' = s}^{n_b - 1} gamma**(s' - s) * r[b, s']          (returns-to-go)
    A[b, s] = (G[b, s] - mean) / (std + eps)

where mean and (population) std are taken over the group, either over all steps
of all its rollouts (``scope="group"``) or over the rollouts' steps with the same
index s (``scope="step"``). Every action token of step s then gets ``A[b, s]``.
It needs no value head: the baseline is the group itself, as in group-relative
policy optimisation, but at step granularity. ``docs/rl.md`` compares it with GAE.

Groups are given by ``group_ids [B]`` (any ints; equal ids = same query).
Statistics go through a ``[B, B]`` same-group matrix, which is cheap for the
batch sizes of LLM RL and needs no static number of groups.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from steptool_jax.rl.recurrence import reverse_linear_recurrence

Scope = Literal["group", "step"]
SCOPES: tuple[str, ...] = ("group", "step")


def step_mask(num_steps: jax.Array, max_steps: int) -> jax.Array:
  """``[B, S]`` bool: True on the real steps ``s < num_steps[b]``."""
  return jnp.arange(max_steps) < jnp.asarray(num_steps)[..., None]


def step_returns_to_go(step_rewards: jax.Array, num_steps: jax.Array, *, gamma: float = 1.0) -> jax.Array:
  """``[B, S]`` discounted sum of the rewards from step s to the row's last step; 0 past it."""
  dtype = jnp.promote_types(jnp.asarray(step_rewards).dtype, jnp.float32)
  valid = step_mask(num_steps, step_rewards.shape[-1]).astype(dtype)
  rewards = jnp.asarray(step_rewards, dtype) * valid
  return reverse_linear_recurrence(gamma, rewards, method="scan") * valid


def group_step_advantages(step_rewards: jax.Array, num_steps: jax.Array, group_ids: jax.Array, *,
                          gamma: float = 1.0, scope: Scope = "group", eps: float = 1e-6) -> jax.Array:
  """``[B, S]`` group-normalised returns-to-go, 0 past each row's last step.

  Args:
    step_rewards: ``[B, S]`` shaped step rewards (intermediate ones, then the final one).
    num_steps: ``[B]`` number of steps of each rollout.
    group_ids: ``[B]`` ints; rollouts of the same query share an id.
    gamma: discount over steps (1 = plain sum, as outcome-reward GRPO).
    scope: ``"group"`` or ``"step"`` (module docstring).
    eps: added to the std. Where the pooled returns are all equal (a group of
      one, a step only one rollout reached) the advantage is 0.
  """
  if scope not in SCOPES:
    raise ValueError(f"scope: expected one of {SCOPES}, found {scope!r}")
  returns = step_returns_to_go(step_rewards, num_steps, gamma=gamma)
  valid = step_mask(num_steps, returns.shape[-1]).astype(returns.dtype)
  group_ids = jnp.asarray(group_ids)
  same_group = (group_ids[:, None] == group_ids[None, :]).astype(returns.dtype)

  def group_total(x: jax.Array) -> jax.Array:
    """For every row, the sum of ``x`` over the rows of its group (per step, or over steps)."""
    # HIGHEST: accelerators would otherwise run this dot in bf16/TF32.
    per_step = jnp.einsum("ij,js->is", same_group, x, precision=jax.lax.Precision.HIGHEST)
    return per_step if scope == "step" else jnp.sum(per_step, axis=-1, keepdims=True)

  def group_extreme(x: jax.Array, reduce) -> jax.Array:
    """For every row, `reduce` (max or min) of ``x`` over the valid entries of its pool."""
    fill = -jnp.inf if reduce is jnp.max else jnp.inf
    pooled = jnp.where((same_group[:, :, None] > 0) & (valid[None] > 0), x[None], fill)  # [B, B, S]
    per_step = reduce(pooled, axis=1)
    return per_step if scope == "step" else reduce(per_step, axis=-1, keepdims=True)

  count = jnp.maximum(group_total(valid), 1)
  mean = group_total(returns * valid) / count
  std = jnp.sqrt(group_total(jnp.square(returns - mean) * valid) / count)
  # Equal returns have no spread. Decided exactly (largest == smallest), not by std > 0: the
  # float mean of equal values can miss them by an ulp, and that residue over std + eps would
  # be an advantage of ~0.05 for rollouts that did exactly the same.
  spread = group_extreme(returns, jnp.max) > group_extreme(returns, jnp.min)
  normalised = (returns - mean) / (jnp.where(spread, std, 1) + eps)
  return jnp.where(spread, normalised, 0) * valid


def steps_to_tokens(step_values: jax.Array, step_ids: jax.Array) -> jax.Array:
  """``[B, T]``: every action token gets the value of its step, 0 off-action."""
  step_ids = jnp.asarray(step_ids)
  index = jnp.where(step_ids >= 0, step_ids, step_values.shape[-1])
  return jnp.take_along_axis(step_values, index, axis=-1, mode="fill", fill_value=0)


def critic_free_advantages(step_rewards: jax.Array, step_ids: jax.Array, num_steps: jax.Array,
                           group_ids: jax.Array, *, gamma: float = 1.0, scope: Scope = "group",
                           eps: float = 1e-6) -> jax.Array:
  """Token advantages ``[B, T]`` for training without a value head (use ``vf_coef=0``)."""
  return steps_to_tokens(
      group_step_advantages(step_rewards, num_steps, group_ids, gamma=gamma, scope=scope, eps=eps), step_ids)
