"""The model on 8 fake CPU devices (data=2, fsdp=2, tensor=2) equals the single-device model."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from steptool_jax.models import (
    SamplingConfig, generate_with_policy, left_pad, load_pretrained, save_pretrained, score_tokens,
    variable_shardings)
from steptool_jax.parallel import make_mesh, sharding_context, spec_sharding
from tests.models.tiny_models import IDS, MASK, NEW_TOKENS, PROMPTS, TINY, tiny_policy

BATCH_IDS = np.concatenate([IDS, IDS[::-1]])  # 4 rows: one per (data, fsdp) shard
BATCH_MASK = np.concatenate([MASK, MASK[::-1]])


@pytest.fixture(scope="module")
def mesh():
  return make_mesh({"data": 2, "fsdp": 2, "tensor": 2})


@pytest.fixture(scope="module")
def sharded_policy(mesh, tmp_path_factory):
  """The tiny policy exported, then loaded straight into its shardings on the mesh."""
  out = save_pretrained(tiny_policy(), tmp_path_factory.mktemp("export"), dtype="float32")
  return load_pretrained(out, mesh=mesh)


def test_rules_map_logical_axes_to_the_mesh(mesh):
  shardings = variable_shardings(TINY, None, mesh)["params"]
  assert shardings["layers"]["self_attn"]["q_proj"]["kernel"].spec == P(None, "fsdp", "tensor", None)
  assert shardings["layers"]["mlp"]["down_proj"]["kernel"].spec == P(None, "tensor", "fsdp")
  assert shardings["embed"]["embedding"].spec == P("tensor", "fsdp")
  # Activations: the batch takes (data, fsdp), so `embed` stays whole.
  assert spec_sharding(("batch", "length", "embed"), mesh).spec == P(("data", "fsdp"), None, None)


def test_import_places_each_tensor_in_its_sharding(mesh, sharded_policy):
  expected = variable_shardings(TINY, None, mesh)
  leaves = jax.tree_util.tree_leaves_with_path(sharded_policy.variables["params"])
  for path, leaf in leaves:
    want = expected["params"]
    for key in path:
      want = want[key.key]
    assert leaf.sharding.is_equivalent_to(want, leaf.ndim), path
  q = sharded_policy.variables["params"]["layers"]["self_attn"]["q_proj"]["kernel"]
  assert q.addressable_shards[0].data.shape == (2, 32, 2, 16)  # [layers, embed/fsdp, heads/tensor, head_dim]
  jax.tree_util.tree_map(np.testing.assert_array_equal, sharded_policy.variables, tiny_policy().variables)


def test_sharded_forward_equals_single_device(mesh, sharded_policy):
  reference = tiny_policy().score(BATCH_IDS, BATCH_MASK, with_entropy=True)
  batch_sharding = spec_sharding(("batch", "length"), mesh)
  ids, mask = jax.device_put((BATCH_IDS, BATCH_MASK), batch_sharding)
  with sharding_context(mesh):
    scores = jax.jit(lambda v, i, m: score_tokens(sharded_policy.model, v, i, m, with_entropy=True))(
        sharded_policy.variables, ids, mask)
  assert isinstance(scores.logp.sharding, NamedSharding)
  for ours, ref in zip((scores.logp, scores.entropy, scores.values), (reference.logp, reference.entropy, reference.values)):
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), atol=2e-5, rtol=1e-5)


def test_sharded_greedy_generation_equals_single_device(mesh, sharded_policy):
  ids, mask = left_pad(PROMPTS, pad_id=0)
  sampling = SamplingConfig(max_new_tokens=NEW_TOKENS)
  reference = generate_with_policy(tiny_policy(), ids, mask, jax.random.key(0), sampling)
  with sharding_context(mesh):
    ids_s, mask_s = jax.device_put((ids, mask), spec_sharding(("batch", "length"), mesh))
    ours = generate_with_policy(sharded_policy, ids_s, mask_s, jax.random.key(0), sampling)
  np.testing.assert_array_equal(np.asarray(ours.tokens), np.asarray(reference.tokens))
  np.testing.assert_allclose(np.asarray(ours.logprobs), np.asarray(reference.logprobs), atol=2e-5)
