"""A tiny random policy over the built-in tokenizer's vocabulary, shared by the rollout and
evaluation tests (weights drawn with numpy: JAX's initialisers cost seconds to compile)."""

from __future__ import annotations

import functools

import jax
import numpy as np

from steptool_jax.envs.builtin_tokenizer import load_tokenizer
from steptool_jax.models import Policy, abstract_variables
from steptool_jax.models.config import tiny
from tests.models.tiny_models import _random_like

# Shapes every model test of this package uses, so `generate` compiles once per process.
MAX_BATCH = 4
MAX_CONTEXT_LEN = 512
MAX_NEW_TOKENS = 8


@functools.lru_cache(maxsize=None)
def builtin_tokenizer():
  return load_tokenizer()


@functools.lru_cache(maxsize=None)
def tiny_policy() -> Policy:
  config = tiny(vocab_size=len(builtin_tokenizer()), initializer_range=0.1)
  params = _random_like(abstract_variables(config)["params"], seed=0, scale=0.1, around_one=("scale",))
  head = {"kernel": np.random.default_rng(1).standard_normal(config.hidden_size).astype(np.float32),
          "bias": np.float32(0.0)}
  return Policy(config=config, variables=jax.device_put({"params": params, "value_head": head}))
