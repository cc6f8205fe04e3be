"""LoRA: fresh adapters are a no-op, merging is exact, switching off gives the base model."""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from steptool_jax.models import LoraConfig, Policy, init_lora_params, score_tokens
from steptool_jax.models.lora import Projection
from tests.models.tiny_models import IDS, MASK, TINY as CFG, tiny_policy

LORA = LoraConfig(rank=4, alpha=8.0)  # all seven projections


def with_random_b(adapters, scale: float = 0.2):
  flat = flax.traverse_util.flatten_dict(adapters)
  keys = jax.random.split(jax.random.key(7), len(flat))
  return flax.traverse_util.unflatten_dict({
      path: scale * jax.random.normal(k, x.shape) if path[-1] == "b" else x
      for k, (path, x) in zip(keys, flat.items())})


@pytest.fixture(scope="module")
def base():
  return tiny_policy()


@pytest.fixture(scope="module")
def fresh(base):
  return Policy(config=CFG, variables={**base.variables, "lora": init_lora_params(CFG, LORA, jax.random.key(1))},
                lora=LORA)


@pytest.fixture(scope="module")
def trained(fresh):
  return Policy(config=CFG, variables={**fresh.variables, "lora": with_random_b(fresh.variables["lora"])},
                lora=LORA)


def test_adapters_are_a_separate_tree(fresh):
  paths = {"/".join(p) for p in flax.traverse_util.flatten_dict(fresh.variables["lora"])}
  assert len(paths) == 2 * len(LORA.targets)
  assert "layers/self_attn/q_proj/a" in paths and "layers/mlp/down_proj/b" in paths
  assert not any("lora" in "/".join(p) for p in flax.traverse_util.flatten_dict(fresh.variables["params"]))
  assert fresh.variables["lora"]["layers"]["self_attn"]["q_proj"]["b"].shape == (2, 4, 4, 16)


def test_fresh_adapters_equal_base(base, fresh):
  np.testing.assert_array_equal(np.asarray(fresh.logits(IDS, MASK)), np.asarray(base.logits(IDS, MASK)))


def test_merged_equals_unmerged(base, trained):
  unmerged = np.asarray(trained.logits(IDS, MASK))
  assert np.abs(unmerged - np.asarray(base.logits(IDS, MASK))).max() > 1e-2  # the adapters do something
  merged = trained.merged()
  assert merged.lora is None and "lora" not in merged.variables
  np.testing.assert_allclose(np.asarray(merged.logits(IDS, MASK)), unmerged, atol=2e-5, rtol=1e-5)


def test_lora_off_is_the_base_model(base, trained):
  np.testing.assert_array_equal(np.asarray(trained.logits(IDS, MASK, use_lora=False)),
                                np.asarray(base.logits(IDS, MASK)))
  np.testing.assert_array_equal(np.asarray(trained.token_logprobs(IDS, MASK, use_lora=False)),
                                np.asarray(base.token_logprobs(IDS, MASK)))


def test_projection_against_numpy():
  rng = np.random.default_rng(0)
  lora = LoraConfig(rank=2, alpha=6.0, targets=("q_proj",))
  proj = Projection(in_features=(6,), out_features=(2, 3), in_axes=("embed",), out_axes=("heads", "head_dim"),
                    use_bias=True, lora=lora)
  w, bias = rng.normal(size=(6, 2, 3)), rng.normal(size=(2, 3))
  a, b = rng.normal(size=(6, 2)), rng.normal(size=(2, 2, 3))
  x = rng.normal(size=(4, 6))
  variables = {"params": {"kernel": w, "bias": bias}, "lora": {"a": a, "b": b}}
  out = np.asarray(proj.apply(jax.tree_util.tree_map(jnp.float32, variables), jnp.float32(x)))
  expected = (x @ w.reshape(6, 6) + bias.reshape(6) + 3.0 * (x @ a) @ b.reshape(2, 6)).reshape(4, 2, 3)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_fresh_adapters_train_through_b_only(fresh):
  """d/dA of x·A·B is zero while B = 0; d/dB is not: the usual LoRA start."""
  @jax.jit
  def grad(adapters):
    def loss(adapters):
      variables = {**fresh.variables, "lora": adapters}
      return jnp.sum(score_tokens(fresh.model, variables, IDS, MASK, with_values=False).logp)
    return jax.grad(loss)(adapters)

  grads = flax.traverse_util.flatten_dict(grad(fresh.variables["lora"]))
  for path, g in grads.items():
    if path[-1] == "a":
      assert float(jnp.abs(g).max()) == 0.0, path
    else:
      assert float(jnp.abs(g).max()) > 0.0, path
