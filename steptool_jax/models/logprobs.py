"""Per-token log-probabilities and entropies of given ids, without a full `[B, T, V]` tensor.

With 128k-token vocabularies the float32 logits of a 4k-token batch row alone are 2 GB,
and autodiff would keep them (and the softmax) for the backward pass. Here time is cut
into chunks; each chunk's logits are made, reduced to `[B, chunk]` numbers and dropped,
and `jax.checkpoint` recomputes them in the backward pass instead of storing them. Peak
memory is one chunk's `[B, chunk, V]` logits.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

LogitsFn = Callable[[jnp.ndarray], jnp.ndarray]


def _chunk_stats(hidden: jnp.ndarray, targets: jnp.ndarray, logits_fn: LogitsFn,
                 with_entropy: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
  logits = logits_fn(hidden).astype(jnp.float32)  # [B, c, V]
  log_norm = jax.nn.logsumexp(logits, axis=-1)
  target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  logp = target_logits - log_norm
  if with_entropy:
    # -sum p log p on the normalised log-probs: `log_norm - sum p * logits` is the same
    # number but cancels catastrophically for peaked distributions.
    log_probs = logits - log_norm[..., None]
    entropy = -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)
  else:
    entropy = jnp.zeros_like(logp)
  return logp, entropy


def chunked_token_logprobs(hidden: jnp.ndarray, targets: jnp.ndarray, logits_fn: LogitsFn, *,
                           chunk_size: int = 512, with_entropy: bool = False
                           ) -> tuple[jnp.ndarray, jnp.ndarray | None]:
  """`log softmax(logits_fn(hidden[b, t]))[targets[b, t]]` and the entropy, both `[B, T]` float32.

  `hidden [B, T, E]` are the states that *predict* `targets [B, T]` (already shifted by the
  caller). `logits_fn` maps `[B, c, E]` to `[B, c, V]` logits.
  """
  batch, length = targets.shape
  stats = jax.checkpoint(lambda h, t: _chunk_stats(h, t, logits_fn, with_entropy))
  if length <= chunk_size:
    logp, entropy = stats(hidden, targets)
  else:
    num_chunks = -(-length // chunk_size)
    pad = num_chunks * chunk_size - length
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
    # [n, B, c, ...]: lax.map runs the chunks one after another, so only one is live.
    h_chunks = hidden.reshape(batch, num_chunks, chunk_size, -1).swapaxes(0, 1)
    t_chunks = targets.reshape(batch, num_chunks, chunk_size).swapaxes(0, 1)
    logp, entropy = jax.lax.map(lambda xs: stats(*xs), (h_chunks, t_chunks))
    logp = logp.swapaxes(0, 1).reshape(batch, -1)[:, :length]
    entropy = entropy.swapaxes(0, 1).reshape(batch, -1)[:, :length]
  return logp, (entropy if with_entropy else None)


def predecessor_states(hidden: jnp.ndarray) -> jnp.ndarray:
  """`out[:, t] = hidden[:, t - 1]`, zeros at `t = 0`: the state that predicts token `t`."""
  return jnp.pad(hidden[:, :-1], ((0, 0), (1, 0)) + ((0, 0),) * (hidden.ndim - 2))


def predicted_mask(attention_mask: jnp.ndarray) -> jnp.ndarray:
  """1 where token `t` is real and has a real predecessor: where `logp`/`values` are defined."""
  mask = attention_mask.astype(jnp.int32)
  return mask * predecessor_states(mask)
