"""The train state: trainable collections in the master dtype with an optimizer state over them
only, the reference a real copy, and shardings that put every optimizer moment where its
parameter is."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from steptool_jax.models.pretrained import variable_shardings
from steptool_jax.parallel import make_mesh, replicated
from steptool_jax.rl.kl_controller import adaptive_kl_controller
from steptool_jax.trainer.state import create_train_state, split_trainable, state_shardings
from tests.models.tiny_models import LORA, TINY, lora_policy

KL = adaptive_kl_controller(0.3, 6.0, 10000.0)


def test_split_trainable():
  policy = {"params": 1, "lora": 2, "value_head": 3}
  assert split_trainable(policy, ("lora", "value_head")) == ({"lora": 2, "value_head": 3}, {"params": 1})
  assert split_trainable(policy, ("params", "value_head")) == ({"params": 1, "value_head": 3}, {"lora": 2})


def _bf16(tree):
  return jax.tree.map(lambda x: np.asarray(x).astype(jnp.bfloat16), tree)


def test_create_train_state_with_lora():
  """bf16 weights: the frozen base stays bf16, the adapters and value head become float32 and
  only they get Adam moments (zeros, shaped like them)."""
  policy = dict(lora_policy().variables)
  policy = {**policy, "params": _bf16(policy["params"]), "lora": _bf16(policy["lora"])}
  tx = optax.adam(1e-3)
  rng = jax.random.key(5)
  state = jax.jit(lambda p, r: create_train_state(p, r, optimizer=tx, trainable_keys=("lora", "value_head"), kl=KL,
                                                  master_dtype=jnp.float32, keep_reference=False))(policy, rng)
  assert int(state.step) == 0 and state.step.dtype == jnp.int32
  assert state.reference is None
  np.testing.assert_array_equal(np.asarray(state.rng), np.asarray(jax.random.key_data(rng)))
  assert {x.dtype for x in jax.tree.leaves(state.policy["params"])} == {jnp.dtype(jnp.bfloat16)}
  for key in ("lora", "value_head"):
    assert {x.dtype for x in jax.tree.leaves(state.policy[key])} == {jnp.dtype(jnp.float32)}
    jax.tree.map(lambda new, old: np.testing.assert_array_equal(np.asarray(new), np.asarray(old, np.float32)),
                 state.policy[key], policy[key])
  adam = state.opt_state[0]
  trainable = {"lora": state.policy["lora"], "value_head": state.policy["value_head"]}
  assert jax.tree.structure(adam.mu) == jax.tree.structure(trainable)
  for moment in (adam.mu, adam.nu):
    jax.tree.map(lambda m, p: (np.testing.assert_array_equal(np.asarray(m), np.zeros(p.shape)),
                               np.testing.assert_equal(m.dtype, jnp.float32)), moment, trainable)


def test_create_train_state_keeps_a_real_copy_of_the_reference():
  policy = dict(lora_policy().variables)
  del policy["lora"]
  tx = optax.sgd(0.1)
  create = lambda p, r: create_train_state(p, r, optimizer=tx, trainable_keys=("params", "value_head"), kl=KL,
                                           master_dtype=jnp.float32, keep_reference=True)
  state = jax.jit(create)(policy, jax.random.key(0))
  jax.tree.map(lambda ref, p: np.testing.assert_array_equal(np.asarray(ref), np.asarray(p)), state.reference,
               state.policy["params"])
  # Distinct buffers: the update donates the policy's params, the reference must survive that.
  pointers = lambda tree: {x.unsafe_buffer_pointer() for x in jax.tree.leaves(tree)}
  assert not pointers(state.reference) & pointers(state.policy["params"])
  assert float(state.kl.value) == pytest.approx(0.3)


def _leaves_by_path(tree):
  return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("lora", [None, LORA], ids=["full", "lora"])
def test_state_shardings_put_each_moment_where_its_parameter_is(lora):
  mesh = make_mesh({"data": 1, "fsdp": 2, "tensor": 2}, jax.devices()[:4])
  keys = ("lora", "value_head") if lora else ("params", "value_head")
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
  variables = dict(lora_policy().variables)
  if lora is None:
    del variables["lora"]
  create = lambda p, r: create_train_state(p, r, optimizer=tx, trainable_keys=keys, kl=KL,
                                           master_dtype=jnp.float32, keep_reference=lora is None)
  abstract = jax.eval_shape(create, variables, jax.random.key(0))
  shardings = state_shardings(abstract, model_config=TINY, lora=lora, mesh=mesh, optimizer=tx, trainable_keys=keys)
  expected = variable_shardings(TINY, lora, mesh)
  for key in variables:
    assert shardings.policy[key] == expected[key]
  # Some parameters really are split (else this test would not tell anything apart).
  assert any(not s.is_fully_replicated for s in jax.tree.leaves(expected["params"]))
  params_by_path = _leaves_by_path({k: expected[k] for k in keys})
  adam = shardings.opt_state[1][0]
  for moment in (adam.mu, adam.nu):
    assert _leaves_by_path(moment) == params_by_path
  assert adam.count == replicated(mesh)
  assert shardings.step == replicated(mesh) and shardings.rng == replicated(mesh)
  assert jax.tree.leaves(shardings.kl) == [replicated(mesh)]
  if lora is None:
    assert shardings.reference == expected["params"]
  else:
    assert shardings.reference is None
  # The state jitted into these shardings lands there.
  state = jax.jit(create, out_shardings=shardings)(variables, jax.random.key(0))
  assert jax.tree.structure(state) == jax.tree.structure(shardings)
  for x, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(shardings)):
    assert x.sharding.is_equivalent_to(sharding, x.ndim)


def test_a_state_without_reference_has_no_reference_leaves():
  """`reference=None` is no leaf, so a LoRA state's checkpoints and shardings have none."""
  policy = {"params": {"w": jnp.ones(2)}, "value_head": {"b": jnp.zeros(())}}
  state = create_train_state(policy, jax.random.key(0), optimizer=optax.sgd(1.0), trainable_keys=("value_head",),
                             kl=KL, master_dtype=jnp.float32, keep_reference=False)
  assert len(jax.tree.leaves(state)) == len(jax.tree.leaves(policy)) + 3  # + step, kl value, rng
