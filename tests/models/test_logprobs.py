"""Chunked per-token log-probs and entropies against the naive full log_softmax."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from steptool_jax.models.logprobs import chunked_token_logprobs, predecessor_states, predicted_mask

B, T, E, V = 2, 10, 8, 50


def naive(hidden, targets, kernel):
  logits = hidden @ kernel
  logp_all = jax.nn.log_softmax(logits, axis=-1)
  logp = jnp.take_along_axis(logp_all, targets[..., None], axis=-1)[..., 0]
  entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
  return logp, entropy


@pytest.fixture(scope="module")
def inputs():
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  hidden = jax.random.normal(k1, (B, T, E))
  kernel = 2.0 * jax.random.normal(k2, (E, V))
  targets = jax.random.randint(k3, (B, T), 0, V)
  return hidden, targets, kernel


@pytest.mark.parametrize("chunk_size", [3, 5, 64])  # ragged last chunk, exact split, one chunk
def test_values_equal_naive(inputs, chunk_size):
  hidden, targets, kernel = inputs
  logp, entropy = chunked_token_logprobs(hidden, targets, lambda h: h @ kernel, chunk_size=chunk_size,
                                         with_entropy=True)
  ref_logp, ref_entropy = naive(hidden, targets, kernel)
  np.testing.assert_allclose(logp, ref_logp, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(entropy, ref_entropy, atol=1e-5, rtol=1e-5)


def test_gradients_equal_naive(inputs):
  hidden, targets, kernel = inputs
  weights = jnp.linspace(-1.0, 1.0, B * T).reshape(B, T)

  def loss(fn, h, w):
    logp, entropy = fn(h, w)
    return jnp.sum(weights * logp) + 0.3 * jnp.sum(entropy)

  chunked = lambda h, w: chunked_token_logprobs(h, targets, lambda x: x @ w, chunk_size=3, with_entropy=True)
  ref = lambda h, w: naive(h, targets, w)
  grads = jax.grad(lambda h, w: loss(chunked, h, w), argnums=(0, 1))(hidden, kernel)
  ref_grads = jax.grad(lambda h, w: loss(ref, h, w), argnums=(0, 1))(hidden, kernel)
  for g, r in zip(grads, ref_grads):
    np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-4)


def test_never_holds_the_full_float32_logits():
  """Compiled forward+backward scratch memory stays below the size of the [B, T, V] logits."""
  b, t, e, v = 2, 256, 32, 4096
  hidden, kernel = jnp.ones((b, t, e)), jnp.ones((e, v))
  targets = jnp.zeros((b, t), jnp.int32)

  def loss(h, w):
    logp, entropy = chunked_token_logprobs(h, targets, lambda x: x @ w, chunk_size=32, with_entropy=True)
    return logp.sum() + entropy.sum()

  compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(hidden, kernel).compile()
  full_logits_bytes = b * t * v * 4
  assert compiled.memory_analysis().temp_size_in_bytes < full_logits_bytes / 2


def test_alignment_helpers():
  hidden = jnp.arange(6.0).reshape(1, 3, 2)
  np.testing.assert_array_equal(predecessor_states(hidden)[0], [[0, 0], [0, 1], [2, 3]])
  mask = jnp.array([[0, 1, 1, 1], [1, 1, 1, 0]])
  np.testing.assert_array_equal(predicted_mask(mask), [[0, 0, 1, 1], [0, 1, 1, 0]])
