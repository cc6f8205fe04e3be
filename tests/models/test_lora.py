"""LoRA: fresh adapters are a no-op, merging is exact, switching off gives the base model."""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np

from steptool_jax.models.config import LoraConfig
from steptool_jax.models.lora import Projection
from tests.models.tiny_models import IDS, LORA, MASK, fresh_lora_policy, lora_policy, tiny_policy, trainable_grads


def test_adapters_are_a_separate_tree():
  variables = fresh_lora_policy().variables
  paths = {"/".join(p) for p in flax.traverse_util.flatten_dict(variables["lora"])}
  assert len(paths) == 2 * len(LORA.targets)
  assert "layers/self_attn/q_proj/a" in paths and "layers/mlp/down_proj/b" in paths
  assert not any("lora" in "/".join(p) for p in flax.traverse_util.flatten_dict(variables["params"]))
  assert variables["lora"]["layers"]["self_attn"]["q_proj"]["b"].shape == (2, 4, 4, 16)  # [layers, rank, heads, head_dim]


def test_fresh_adapters_equal_base():
  np.testing.assert_array_equal(np.asarray(fresh_lora_policy().logits(IDS, MASK)),
                                np.asarray(tiny_policy().logits(IDS, MASK)))


def test_merged_equals_unmerged():
  trained = lora_policy()
  unmerged = np.asarray(trained.logits(IDS, MASK))
  assert np.abs(unmerged - np.asarray(tiny_policy().logits(IDS, MASK))).max() > 1e-2  # the adapters do something
  merged = trained.merged()
  assert merged.lora is None and "lora" not in merged.variables
  np.testing.assert_allclose(np.asarray(merged.logits(IDS, MASK)), unmerged, atol=2e-5, rtol=1e-5)


def test_lora_off_is_the_reference_policy():
  """The trainer's reference log-probs: same variables, adapters switched off."""
  ours = tiny_policy().score(IDS, MASK, with_entropy=True).logp
  np.testing.assert_array_equal(np.asarray(lora_policy().token_logprobs(IDS, MASK, use_lora=False)),
                                np.asarray(ours))


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


def test_fresh_adapters_train_through_b_only():
  """d/dA of x·A·B is zero while B = 0; d/dB is not: the usual LoRA start."""
  grads = flax.traverse_util.flatten_dict(trainable_grads(fresh_lora_policy())["lora"])
  for path, g in grads.items():
    if path[-1] == "a":
      assert float(jnp.abs(g).max()) == 0.0, path
    else:
      assert float(jnp.abs(g).max()) > 0.0, path


def test_adapter_dropout_only_when_not_deterministic():
  lora = LoraConfig(rank=2, alpha=2.0, dropout=0.5, targets=("q_proj",))
  make = lambda deterministic: Projection(in_features=(8,), out_features=(3,), in_axes=("embed",), out_axes=("mlp",),
                                          lora=lora, deterministic=deterministic)
  rng = np.random.default_rng(1)
  variables = {"params": {"kernel": np.zeros((8, 3), np.float32)},
               "lora": {"a": rng.normal(size=(8, 2)).astype(np.float32), "b": rng.normal(size=(2, 3)).astype(np.float32)}}
  x = np.ones((5, 8), np.float32)
  plain = np.asarray(make(True).apply(variables, x))
  np.testing.assert_allclose(plain, np.tile(x[0] @ variables["lora"]["a"] @ variables["lora"]["b"], (5, 1)), rtol=1e-5)
  key = jax.random.key(0)
  dropped = np.asarray(make(False).apply(variables, x, rngs={"dropout": key}))
  assert not np.allclose(dropped, plain)
  np.testing.assert_array_equal(dropped, np.asarray(make(False).apply(variables, x, rngs={"dropout": key})))
