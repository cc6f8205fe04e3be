"""Per-token KL penalties between the policy and the reference policy.

The estimators of KL(pi || ref) at a sampled token, with ``d = logp - ref_logp``:

* ``kl``: ``d`` (unbiased, can be negative per token; the original's default).
* ``abs``: ``|d|``.
* ``mse``: ``d**2 / 2``.
* ``low_var_kl``: Schulman's k3, ``exp(-d) + d - 1`` (unbiased, >= 0, lower
  variance), clipped at ``LOW_VAR_KL_CLIP`` because ``exp(-d)`` explodes when the
  reference finds the token far likelier than the policy does.

There is no exact full-distribution KL here: the update only ever has the log-probs of the
taken tokens (the chunked log-prob path never materialises `[B, T, V]` logits).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

KLPenalty = Literal["kl", "abs", "mse", "low_var_kl"]
KL_PENALTIES: tuple[str, ...] = ("kl", "abs", "mse", "low_var_kl")
LOW_VAR_KL_CLIP = 10.0


def kl_penalty(logp: jax.Array, ref_logp: jax.Array, kind: KLPenalty) -> jax.Array:
  """Per-token KL estimate, ``[B, T]``.

  Args:
    logp: log-probabilities of the taken tokens under the policy, ``[B, T]``.
    ref_logp: the same under the reference policy.
    kind: one of ``KL_PENALTIES`` (the run's ``reward.kl_penalty``).
  """
  if kind not in KL_PENALTIES:
    raise ValueError(f"kl_penalty: expected one of {KL_PENALTIES}, found {kind!r}")
  diff = logp - ref_logp
  if kind == "kl":
    return diff
  if kind == "abs":
    return jnp.abs(diff)
  if kind == "mse":
    return 0.5 * jnp.square(diff)
  return jnp.minimum(jnp.expm1(-diff) + diff, LOW_VAR_KL_CLIP)
