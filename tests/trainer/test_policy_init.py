"""The starting policy: the random init's architecture and seeding, and a run directory of ours
read back (its saved config, its trained collections on top of its rebuilt base, adapters
merged), for evaluation, export and `model.init_from`."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from steptool_jax.config import schema
from steptool_jax.config.run import RunConfig
from steptool_jax.models.config import tiny
from steptool_jax.models.lora import merge_lora
from steptool_jax.models.policy import abstract_variables
from steptool_jax.parallel import make_mesh
from steptool_jax.rl.kl_controller import fixed_kl_controller
from steptool_jax.trainer import policy_init
from steptool_jax.trainer.run import checkpointing
from steptool_jax.trainer.state import create_train_state
from tests.models.tiny_models import _random_like
from tests.trainer.fixtures import compile_cache  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("compile_cache", "fast_model_setup")

VOCAB = 128
MESH = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])


@functools.lru_cache(maxsize=None)
def _shapes(config, lora=None, collection="params"):
  return nn.unbox(abstract_variables(config, lora))[collection]


def _cheap(shapes, rng):
  """Fixed numpy weights shifted by one number drawn from `rng`: the right shapes, a pure
  function of the key, and quick to compile (XLA takes tens of seconds on a small CPU for
  the model's own initialisers, which tests/models test)."""
  base = _random_like(shapes, seed=0, scale=0.1)
  shift = jax.random.uniform(rng, (), jnp.float32)
  return jax.tree.map(lambda x: jnp.asarray(x) + shift, base)


@pytest.fixture
def fast_model_setup(monkeypatch):
  """Cheap stand-ins for the model's initialisers, and the pure shape/sharding functions
  memoised (each traces the whole model; a policy build calls them several times)."""
  monkeypatch.setattr(policy_init, "init_base_params", lambda config, rng: _cheap(_shapes(config), rng))
  monkeypatch.setattr(policy_init, "init_lora_params",
                      lambda config, lora, rng: _cheap(_shapes(config, lora, "lora"), rng))
  monkeypatch.setattr(policy_init, "abstract_variables", functools.lru_cache(maxsize=None)(abstract_variables))
  monkeypatch.setattr(policy_init, "variable_shardings",
                      functools.lru_cache(maxsize=None)(policy_init.variable_shardings))


def run_config(**changes) -> RunConfig:
  return schema.replace(RunConfig(), **{"seed": 3, **changes})


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_random_model_config():
  config = policy_init.random_model_config(run_config(), VOCAB)
  assert config == tiny(vocab_size=VOCAB)  # the tiny preset, sized to the tokenizer
  numerics = run_config(model__param_dtype="bfloat16", model__compute_dtype="float16", model__remat="dots")
  config = policy_init.random_model_config(numerics, VOCAB)
  assert (config.param_dtype, config.dtype, config.remat) == ("bfloat16", "float16", "dots")
  # Presets with a vocabulary of their own keep it.
  assert policy_init.random_model_config(run_config(model__preset="llama3_2_1b"), VOCAB).vocab_size == 128256


def test_seed_streams_are_distinct_and_reproducible():
  keys = [jax.random.key_data(policy_init.seed_key(run_config(), s))
          for s in (policy_init.INIT_STREAM, policy_init.LORA_STREAM, policy_init.RUN_STREAM)]
  assert len({tuple(np.asarray(k)) for k in keys}) == 3
  np.testing.assert_array_equal(jax.random.key_data(policy_init.seed_key(run_config(), 0)), keys[0])
  assert not np.array_equal(jax.random.key_data(policy_init.seed_key(run_config(seed=4), 0)), keys[0])


def test_random_initial_policy_is_seeded_and_lora_leaves_the_base_alone():
  plain = policy_init.initial_policy(run_config(), VOCAB, MESH)
  assert jax.tree.map(lambda x: x.shape, plain.variables["params"]) == jax.tree.map(
      lambda x: x.shape, _shapes(tiny(vocab_size=VOCAB)))
  assert set(plain.variables) == {"params", "value_head"} and plain.lora is None
  other = policy_init.initial_policy(run_config(seed=4), VOCAB, MESH)
  assert not np.array_equal(np.asarray(other.variables["params"]["embed"]["embedding"]),
                            np.asarray(plain.variables["params"]["embed"]["embedding"]))
  with_lora = policy_init.initial_policy(run_config(model__lora__enabled=True, model__lora__rank=4), VOCAB, MESH)
  assert with_lora.lora == run_config(model__lora__enabled=True, model__lora__rank=4).model.lora.lora_config()
  # Same seed, same base (reproducible), and the adapters draw from their own stream.
  assert_trees_equal(with_lora.variables["params"], plain.variables["params"])
  assert jax.tree.map(lambda x: x.shape, with_lora.variables["lora"]) == jax.tree.map(
      lambda x: x.shape, _shapes(tiny(vocab_size=VOCAB), with_lora.lora, "lora"))


def test_init_from_a_directory_that_is_neither_a_run_nor_a_model(tmp_path):
  with pytest.raises(ValueError) as info:
    policy_init.initial_policy(run_config(model__init_from=str(tmp_path)), VOCAB, MESH)
  assert str(info.value) == (f"model.init_from: expected a workdir of ours (with checkpoints/), a Hugging Face"
                             f" directory (with config.json) or a GGUF file, found none at {tmp_path}")


def test_a_run_directory_without_checkpoints_is_named_by_the_field(tmp_path):
  (tmp_path / "checkpoints").mkdir()
  with pytest.raises(ValueError, match=r"^model.init_from: no checkpoint under "):
    policy_init.initial_policy(run_config(model__init_from=str(tmp_path)), VOCAB, MESH)


def test_init_from_a_run_directory_under_home(tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path))
  (tmp_path / "run" / "checkpoints").mkdir(parents=True)
  config = run_config(model__init_from="~/run")
  config.check_paths()  # the path exists
  with pytest.raises(ValueError) as info:
    policy_init.initial_policy(config, VOCAB, MESH)
  # Recognised as a run of ours (which has no checkpoint yet), like the same path spelled out:
  assert str(info.value) == f"model.init_from: no checkpoint under {tmp_path / 'run' / 'checkpoints'}"


def save_run(workdir, run: RunConfig, base: dict, trained: dict, step: int = 2) -> None:
  """A checkpoint as a run writes it: `trained` are the algorithm's trainable collections."""
  policy = {**base, **trained}
  keys = tuple(trained)
  state = create_train_state(policy, jax.random.key(0), optimizer=optax.adam(1e-3), trainable_keys=keys,
                             kl=fixed_kl_controller(0.1), master_dtype=jnp.float32, keep_reference=False)
  checkpointer = checkpointing.Checkpointer(workdir, every_steps=1, async_save=False)
  checkpointer.save(step, state, keys, progress={"step": step}, config=checkpointing.config_json(run), force=True)
  checkpointer.close()


def test_policy_of_a_full_fine_tuning_run(tmp_path):
  run = run_config(model__value_head_dropout=0.1)
  trained = {"params": _random_like(_shapes(tiny(vocab_size=VOCAB)), seed=11,
                                    scale=0.05, around_one=("scale",)),
             "value_head": {"kernel": np.full(64, 0.5, np.float32), "bias": np.float32(-1.0)}}
  save_run(tmp_path, run, {"params": trained["params"]}, trained)
  assert policy_init.run_config(tmp_path) == run
  policy = policy_init.policy_of_run(tmp_path, VOCAB, MESH)
  assert policy.lora is None
  assert_trees_equal(policy.variables, trained)


def test_policy_of_a_lora_run_is_its_base_with_the_adapters_merged(tmp_path):
  run = run_config(model__lora__enabled=True, model__lora__rank=4, model__lora__alpha=8.0, algorithm="sft",
                   batch__size=8)
  lora = run.model.lora.lora_config()
  adapters = _random_like(_shapes(tiny(vocab_size=VOCAB), lora, "lora"), seed=12, scale=0.2)
  base = policy_init.initial_policy(schema.replace(run, model__lora__enabled=False), VOCAB, MESH).variables
  save_run(tmp_path, run, base, {"lora": adapters})  # SFT: no value head saved
  assert policy_init.run_config(tmp_path) == run
  expected = jax.jit(merge_lora, static_argnums=2)(base["params"], adapters, lora)

  # The policy of that run (evaluation, export) is its base with the adapters merged, in its
  # own numerics (float32); another run starting from it (SFT -> PPO) takes that policy as its
  # base, in this run's numerics (bf16 here), with fresh adapters on top.
  policy = policy_init.policy_of_run(tmp_path, VOCAB, MESH)
  assert policy.lora is None and set(policy.variables) == {"params", "value_head"}
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-6),
               policy.variables["params"], expected)
  assert_trees_equal(policy.variables["value_head"], base["value_head"])  # the fresh head of the rebuilt run
  follow = run_config(model__init_from=str(tmp_path), model__param_dtype="bfloat16", model__lora__enabled=True,
                      model__lora__rank=2)
  started = policy_init.initial_policy(follow, VOCAB, MESH)
  assert started.lora == follow.model.lora.lora_config() and set(started.variables) == {"params", "value_head",
                                                                                         "lora"}
  assert started.config.param_dtype == "bfloat16"
  assert {x.dtype for x in jax.tree.leaves(started.variables["params"])} == {jnp.dtype(jnp.bfloat16)}
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y), rtol=1e-2,
                                                       atol=1e-3), started.variables["params"], expected)
