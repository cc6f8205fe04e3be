"""Per-token KL penalties between the policy and the reference policy.

The estimators of KL(pi || ref) at a sampled token, with ``d = logp - ref_logp``:

* ``kl``: ``d`` (unbiased, can be negative per token; the original's default).
* ``abs``: ``|d|``.
* ``mse``: ``d**2 / 2``.
* ``low_var_kl``: Schulman's k3, ``exp(-d) + d - 1`` (unbiased, >= 0, lower
  variance), clipped at ``LOW_VAR_KL_CLIP`` because ``exp(-d)`` explodes when the
  reference finds the token far likelier than the policy does.
* ``full``: the exact KL between the full next-token distributions; then
  ``logp`` and ``ref_logp`` are ``[..., V]`` logits or log-probabilities.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

KLPenalty = Literal["kl", "abs", "mse", "low_var_kl", "full"]
KL_PENALTIES: tuple[str, ...] = ("kl", "abs", "mse", "low_var_kl", "full")
LOW_VAR_KL_CLIP = 10.0


def kl_penalty(logp: jax.Array, ref_logp: jax.Array, kind: KLPenalty = "kl") -> jax.Array:
  """Per-token KL estimate, ``[B, T]`` (for ``full``: from ``[B, T, V]`` inputs).

  Args:
    logp: log-probabilities of the taken tokens under the policy, ``[B, T]``;
      for ``kind="full"`` the policy's logits or log-probs over the vocabulary.
    ref_logp: the same under the reference policy.
    kind: one of ``KL_PENALTIES``.
  """
  if kind not in KL_PENALTIES:
    raise ValueError(f"kl_penalty: expected one of {KL_PENALTIES}, found {kind!r}")
  if kind == "full":
    policy = jax.nn.log_softmax(logp, axis=-1)
    reference = jax.nn.log_softmax(ref_logp, axis=-1)
    return jnp.sum(jnp.exp(policy) * (policy - reference), axis=-1)
  diff = logp - ref_logp
  if kind == "kl":
    return diff
  if kind == "abs":
    return jnp.abs(diff)
  if kind == "mse":
    return 0.5 * jnp.square(diff)
  return jnp.minimum(jnp.expm1(-diff) + diff, LOW_VAR_KL_CLIP)


def mean_sequence_kl(kl: jax.Array, mask: jax.Array) -> jax.Array:
  """Batch mean of the per-sequence KL (sum over action tokens): what the adaptive
  controller is fed, as in the original trainer's ``objective/kl``."""
  return jnp.mean(jnp.sum(jnp.where(mask.astype(bool), kl, 0), axis=-1))
