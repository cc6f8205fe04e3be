"""The PPO loss over action tokens, as one pure function returning ``(loss, metrics)``.

Per action token, with ``ratio = exp(logp - old_logp)``:

    policy  = max(-A * ratio, -A * clip(ratio, 1 - clip_eps, 1 + clip_eps))
    value   = 0.5 * max((v - R)**2, (old_v + clip(v - old_v, -value_clip, value_clip) - R)**2)
    loss    = mean(policy) + vf_coef * mean(value) - entropy_coef * mean(entropy)
              + kl_loss_coef * mean(kl_penalty(logp, ref_logp))

with all means over the action tokens of the (mini)batch. The last two terms are
optional: the entropy bonus, and a KL loss for critic-free training where the KL
is not folded into the token rewards. The ratio guard of the original trainer
zeroes the loss of a minibatch whose mean ratio exceeds ``ratio_threshold``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from steptool_jax.rl.kl import KLPenalty, kl_penalty
from steptool_jax.rl.masked import explained_variance, masked_mean


def ppo_loss(logp: jax.Array, old_logp: jax.Array, values: jax.Array, old_values: jax.Array,
             advantages: jax.Array, returns: jax.Array, mask: jax.Array, *,
             clip_eps: float, value_clip: float, vf_coef: float, ratio_threshold: float,
             kl_loss_kind: KLPenalty, entropy: jax.Array | None = None, entropy_coef: float = 0.0,
             ref_logp: jax.Array | None = None, kl_loss_coef: float | jax.Array = 0.0,
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Clipped PPO loss and its statistics for one minibatch of ``[B, T]`` arrays.

  Args:
    logp, values: current policy log-probs and value predictions (differentiated).
    old_logp, old_values: the same from the rollout (treated as constants).
    advantages, returns: from ``compute_gae`` (advantages usually whitened) or the
      critic-free estimator (then pass ``vf_coef=0``).
    mask: action mask; every mean is over its nonzero positions.
    clip_eps, value_clip, vf_coef: PPO constants (the run's `ppo.*`; paper: 0.2, 0.2, 0.1).
    entropy: optional per-token entropy ``[B, T]`` (``models.policy.score_tokens(with_entropy=True)``).
    entropy_coef: weight of the entropy bonus.
    ref_logp: optional reference log-probs for a KL loss term.
    kl_loss_kind: the estimator of that term (the run's `reward.kl_penalty`).
    kl_loss_coef: the weight of that term.
    ratio_threshold: minibatches with a larger mean ratio get loss 0 (and zero
      gradients, as long as the inputs are finite), flagged in ``metrics["skipped"]``.

  Returns:
    ``(loss, metrics)``: a scalar loss and a flat dict of scalar statistics.
  """
  # Select every per-token input down to the mask first: padding may hold inf/NaN
  # (log-probs of pad tokens), and a NaN that reaches exp() poisons the gradient
  # even where its loss term is masked out afterwards.
  on = jnp.asarray(mask).astype(bool)
  logp, values = jnp.where(on, logp, 0), jnp.where(on, values, 0)
  old_logp, old_values, advantages, returns = (
      jax.lax.stop_gradient(jnp.where(on, x, 0)) for x in (old_logp, old_values, advantages, returns))
  if entropy is not None:
    entropy = jnp.where(on, entropy, 0)
  if ref_logp is not None:
    ref_logp = jnp.where(on, ref_logp, 0)

  log_ratio = logp - old_logp
  ratio = jnp.exp(log_ratio)
  surrogate = -advantages * ratio
  clipped_surrogate = -advantages * jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps)
  policy_loss = masked_mean(jnp.maximum(surrogate, clipped_surrogate), mask)

  clipped_values = old_values + jnp.clip(values - old_values, -value_clip, value_clip)
  value_error = jnp.square(values - returns)
  clipped_value_error = jnp.square(clipped_values - returns)
  value_loss = 0.5 * masked_mean(jnp.maximum(value_error, clipped_value_error), mask)

  loss = policy_loss + vf_coef * value_loss
  metrics = {
      "policy_loss": policy_loss,
      "value_loss": value_loss,
      "clip_fraction": masked_mean((clipped_surrogate > surrogate).astype(ratio.dtype), mask),
      "value_clip_fraction": masked_mean((clipped_value_error > value_error).astype(ratio.dtype), mask),
      "approx_kl": 0.5 * masked_mean(jnp.square(log_ratio), mask),
      "policy_kl": masked_mean(-log_ratio, mask),
      "ratio_mean": masked_mean(ratio, mask),
      "explained_variance": explained_variance(values, returns, mask),
  }
  if entropy is not None:
    metrics["entropy"] = masked_mean(entropy, mask)
    loss = loss - entropy_coef * metrics["entropy"]
  if ref_logp is not None:
    metrics["kl_loss"] = masked_mean(kl_penalty(logp, jax.lax.stop_gradient(ref_logp), kl_loss_kind), mask)
    loss = loss + kl_loss_coef * metrics["kl_loss"]

  skipped = jax.lax.stop_gradient(metrics["ratio_mean"]) > ratio_threshold
  loss = jnp.where(skipped, jnp.zeros_like(loss), loss)
  metrics["skipped"] = skipped.astype(loss.dtype)
  metrics["loss"] = loss
  return loss, jax.tree.map(jax.lax.stop_gradient, metrics)
