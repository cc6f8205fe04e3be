"""Tiny random policies shared by the model tests (one per test process).

Weights are drawn with numpy from the abstract variable shapes: compiling JAX's random
initialisers costs seconds per process on a small CPU, and `init_policy` has its own test.
Norm scales are perturbed around 1 so that a mix-up of norms would show.
"""

from __future__ import annotations

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np

from steptool_jax.models import CausalLM, LoraConfig, Policy, abstract_variables, init_lora_params, score_tokens
from steptool_jax.models.config import ModelConfig, tiny

TINY = tiny(vocab_size=128, initializer_range=0.1)
LORA = LoraConfig(rank=4, alpha=8.0)  # all seven projections

# Two rows, one right-padded; test batches share this shape so compiled functions are reused.
IDS = np.array([[5, 9, 100, 7, 3, 44, 0, 0], [1, 2, 3, 4, 5, 6, 7, 8]], np.int32)
MASK = np.array([[1, 1, 1, 1, 1, 1, 0, 0], [1] * 8], np.int32)

# Generation prompts (left-padded to 6) and length, shared by the single- and multi-device tests.
PROMPTS = [[1, 17, 33, 90, 41, 5], [1, 64, 8], [1, 5, 6, 7], [2]]
NEW_TOKENS = 8


def _random_like(tree, seed: int, scale: float, around_one: tuple[str, ...] = ()):
  rng = np.random.default_rng(seed)
  flat = flax.traverse_util.flatten_dict(flax.linen.unbox(tree))
  return flax.traverse_util.unflatten_dict({
      path: ((1.0 if path[-1] in around_one else 0.0) + scale * rng.standard_normal(x.shape)).astype(np.float32)
      for path, x in flat.items()})


@functools.lru_cache(maxsize=None)
def tiny_policy() -> Policy:
  """Random base weights and a random (non-zero) value head, so values are not trivially 0."""
  params = _random_like(abstract_variables(TINY)["params"], seed=0, scale=0.1, around_one=("scale",))
  rng = np.random.default_rng(1)
  head = {"kernel": rng.standard_normal(TINY.hidden_size).astype(np.float32), "bias": np.float32(0.25)}
  return Policy(config=TINY, variables=jax.device_put({"params": params, "value_head": head}))


@functools.lru_cache(maxsize=None)
def lora_policy() -> Policy:
  """`tiny_policy` with trained-looking (random, non-zero A and B) adapters."""
  adapters = _random_like(abstract_variables(TINY, LORA)["lora"], seed=2, scale=0.2)
  return Policy(config=TINY, variables={**tiny_policy().variables, "lora": jax.device_put(adapters)}, lora=LORA)


@functools.lru_cache(maxsize=None)
def fresh_lora_policy() -> Policy:
  """`tiny_policy` with freshly initialised adapters (B = 0)."""
  adapters = init_lora_params(TINY, LORA, jax.random.key(1))
  return Policy(config=TINY, variables={**tiny_policy().variables, "lora": adapters}, lora=LORA)


@functools.lru_cache(maxsize=None)
def _trainable_grad_fn(config: ModelConfig):
  model = CausalLM(config, LORA)

  @jax.jit
  def grads(variables):
    def loss(trainable):
      scores = score_tokens(model, {**variables, **trainable}, IDS, MASK)
      return jnp.sum(scores.logp) + jnp.sum(scores.values ** 2)
    return jax.grad(loss)({"lora": variables["lora"], "value_head": variables["value_head"]})

  return grads


def trainable_grads(policy: Policy, remat: str = "none"):
  """Gradients of `sum(logp) + sum(values^2)` w.r.t. the adapters and the value head."""
  return _trainable_grad_fn(TINY.replace(remat=remat))(policy.variables)
