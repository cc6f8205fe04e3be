"""Checkpoints: a saved state restored into the shardings of another mesh (the frozen parts
rebuilt, the reference the starting weights), the save interval and keep-N, errors that name
the field and the data, and the configs of older versions read as they meant."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from steptool_jax.config import schema
from steptool_jax.config.run import RunConfig, parse_run_config
from steptool_jax.parallel import make_mesh, replicated
from steptool_jax.rl.kl_controller import adaptive_kl_controller
from steptool_jax.trainer.run import checkpointing
from steptool_jax.trainer.state import TrainState, create_train_state

TX = optax.adam(0.1)
KL = adaptive_kl_controller(0.3, 6.0, 10000.0)
RNG = np.random.default_rng(0)
START = {"params": {"w": RNG.standard_normal((8, 4)).astype(np.float32)},
         "lora": {"a": RNG.standard_normal((8, 2)).astype(np.float32), "b": np.zeros((2, 4), np.float32)},
         "value_head": {"bias": np.float32(0.0)}}


@dataclasses.dataclass
class FakeSource:
  num_rows: int


def create(keys, keep_reference):
  return lambda policy, rng, critic=None: create_train_state(policy, rng, critic, optimizer=TX, trainable_keys=keys,
                                                             kl=KL, master_dtype=jnp.float32,
                                                             keep_reference=keep_reference)


def trained_state(keys, keep_reference) -> TrainState:
  """A state a few steps in: trainable collections moved, Adam moments non-zero, KL moved."""
  state = create(keys, keep_reference)({k: START[k] for k in START if k != "lora" or "lora" in keys},
                                       jax.random.key(7))
  trainable = {k: state.policy[k] for k in keys}
  grads = jax.tree.map(lambda x: jnp.full(x.shape, 0.5, x.dtype), trainable)
  updates, opt_state = TX.update(grads, state.opt_state, trainable)
  moved = optax.apply_updates(trainable, updates)
  return state.replace(step=jnp.int32(5), policy={**state.policy, **moved}, opt_state=opt_state,
                       kl=state.kl.replace(value=jnp.float32(0.42)))


def save(workdir, state, keys, *, step=5, data_rows=10, batch_rows=2, config=None, **options):
  checkpointer = checkpointing.Checkpointer(workdir, async_save=False, **options)
  progress = {"step": step, "epoch": 1, "batch_index": 2, "data_rows": data_rows, "batch_rows": batch_rows}
  saved = checkpointer.save(step, state, keys, progress=progress, force=True,
                            config=config if config is not None else checkpointing.config_json(RunConfig()))
  checkpointer.close()
  return saved


def shardings_on(mesh, abstract: TrainState) -> TrainState:
  """Rows of every 2-d weight (and its moments) split over the mesh's 8 data devices; the rest replicated."""
  rows = NamedSharding(mesh, PartitionSpec("data", None))
  return jax.tree.map(lambda x: rows if x.ndim == 2 and x.shape[0] == 8 else replicated(mesh), abstract)


def assert_equal_trees(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


MESH8 = make_mesh({"data": 8, "fsdp": 1, "tensor": 1}, jax.devices()[:8])


def test_a_lora_state_restores_into_the_shardings_of_another_mesh(tmp_path):
  keys = ("lora", "value_head")
  state = trained_state(keys, keep_reference=False)
  save(tmp_path, state, keys)  # saved from one device
  rebuilt = {k: START[k] for k in START}  # the run's starting point, rebuilt: base + fresh adapters
  abstract = jax.eval_shape(create(keys, False), rebuilt, jax.random.key(7))
  shardings = shardings_on(MESH8, abstract)
  checkpointer = checkpointing.Checkpointer(tmp_path, read_only=True)
  restored, step = checkpointing.restore_or_create(checkpointer, create(keys, False), rebuilt, jax.random.key(7),
                                                   abstract, shardings, keys, source=FakeSource(10), batch_rows=2)
  checkpointer.close()
  assert step == 5 and int(restored.step) == 5
  assert float(restored.kl.value) == pytest.approx(0.42) and restored.kl.target == KL.target
  assert_equal_trees(restored.rng, state.rng)
  assert_equal_trees({k: restored.policy[k] for k in keys}, {k: state.policy[k] for k in keys})
  assert_equal_trees(restored.opt_state, state.opt_state)
  assert_equal_trees(restored.policy["params"], START["params"])  # the frozen base: rebuilt, not saved
  assert restored.reference is None
  for leaf, sharding in zip(jax.tree.leaves(restored), jax.tree.leaves(shardings)):
    assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim)
  assert len(restored.policy["lora"]["a"].addressable_shards) == 8
  assert restored.policy["lora"]["a"].addressable_shards[3].data.shape == (1, 2)


def test_without_lora_the_reference_is_the_rebuilt_starting_weights(tmp_path):
  keys = ("params", "value_head")
  state = trained_state(keys, keep_reference=True)
  assert not np.allclose(state.policy["params"]["w"], START["params"]["w"])
  save(tmp_path, state, keys)
  rebuilt = {"params": START["params"], "value_head": START["value_head"]}
  abstract = jax.eval_shape(create(keys, True), rebuilt, jax.random.key(7))
  checkpointer = checkpointing.Checkpointer(tmp_path, read_only=True)
  restored, _ = checkpointing.restore_or_create(checkpointer, create(keys, True), rebuilt, jax.random.key(7),
                                                abstract, shardings_on(MESH8, abstract), keys,
                                                source=FakeSource(10), batch_rows=2)
  checkpointer.close()
  assert_equal_trees(restored.policy["params"], state.policy["params"])  # trained: from disk
  assert_equal_trees(restored.reference, START["params"])  # the reference: the starting weights


def test_without_a_checkpoint_a_fresh_state_is_created_in_its_shardings(tmp_path):
  keys = ("lora", "value_head")
  abstract = jax.eval_shape(create(keys, False), START, jax.random.key(7))
  shardings = shardings_on(MESH8, abstract)
  checkpointer = checkpointing.Checkpointer(tmp_path)
  state, step = checkpointing.restore_or_create(checkpointer, create(keys, False), START, jax.random.key(7),
                                                abstract, shardings, keys, source=FakeSource(10), batch_rows=2)
  checkpointer.close()
  assert step == 0 and int(state.step) == 0
  assert_equal_trees(state.policy, START)
  for leaf, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(shardings)):
    assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim)


def test_resuming_on_other_data_is_refused(tmp_path):
  keys = ("lora", "value_head")
  save(tmp_path, trained_state(keys, False), keys, data_rows=10, batch_rows=2)
  abstract = jax.eval_shape(create(keys, False), START, jax.random.key(7))
  checkpointer = checkpointing.Checkpointer(tmp_path, read_only=True)
  with pytest.raises(ValueError) as info:
    checkpointing.restore_or_create(checkpointer, create(keys, False), START, jax.random.key(7), abstract,
                                    shardings_on(MESH8, abstract), keys, source=FakeSource(12), batch_rows=2)
  checkpointer.close()
  assert str(info.value) == (
      f"data: the checkpoint at step 5 in {tmp_path / 'checkpoints'} was trained on 10 rows in batches of 2, this"
      " run has 12 rows in batches of 2; resuming would not continue that run (use a new --workdir)")


def test_the_save_interval_and_keep_n(tmp_path):
  keys = ("lora", "value_head")
  state = trained_state(keys, False)
  checkpointer = checkpointing.Checkpointer(tmp_path, every_steps=2, keep=2, async_save=False)
  progress = {"step": 0}
  config = checkpointing.config_json(RunConfig())
  saved = [checkpointer.save(step, state, keys, progress=progress, config=config) for step in (1, 2, 3, 4, 6)]
  assert saved == [False, True, False, True, True]
  assert checkpointer.save(7, state, keys, progress=progress, config=config, force=True)
  checkpointer.close()
  again = checkpointing.Checkpointer(tmp_path, read_only=True)
  assert again.all_steps() == [6, 7] and again.latest_step() == 7  # the newest 2 of 2, 4, 6, 7
  again.close()


def test_latest_checkpoint_names_the_field(tmp_path):
  with pytest.raises(ValueError) as info:
    with checkpointing.latest_checkpoint(tmp_path, field="model.init_from"):
      pass
  assert str(info.value) == f"model.init_from: no checkpoint under {tmp_path / 'checkpoints'}"
  with pytest.raises(ValueError) as info:
    with checkpointing.latest_checkpoint(tmp_path):
      pass
  assert str(info.value) == f"no checkpoint under {tmp_path / 'checkpoints'}"
  missing = tmp_path / "typo"
  with pytest.raises(ValueError, match=f"^model.init_from: no checkpoint under {missing / 'checkpoints'}$"):
    with checkpointing.latest_checkpoint(missing, field="model.init_from"):
      pass
  assert not missing.exists()  # read-only: nothing is created


def test_latest_checkpoint_of_a_run(tmp_path):
  keys = ("lora", "value_head")
  run = schema.replace(RunConfig(), seed=9, model__lora__enabled=True)
  save(tmp_path, trained_state(keys, False), keys, step=3, config=checkpointing.config_json(run))
  with checkpointing.latest_checkpoint(tmp_path) as (checkpointer, step):
    assert step == 3
    assert checkpointing.read_run_config(checkpointer, step) == run


def test_is_run_directory(tmp_path):
  assert not checkpointing.is_run_directory(tmp_path)
  (tmp_path / "checkpoints").mkdir()
  assert checkpointing.is_run_directory(tmp_path)
  (tmp_path / "config.json").write_text("{}")  # a Hugging Face model directory that has a checkpoints folder
  assert not checkpointing.is_run_directory(tmp_path)


def test_config_json_is_plain_json_that_parses_back():
  run = schema.replace(RunConfig(), model__lora__targets=("q_proj", "v_proj"), mesh={"data": 2, "fsdp": -1})
  saved = checkpointing.config_json(run)
  assert saved["model"]["lora"]["targets"] == ["q_proj", "v_proj"]
  assert parse_run_config(saved) == run


def old_format(run: RunConfig, granularity: str, weighting: str) -> dict:
  """The JSON a checkpoint of the previous layout holds: the env section under `data.env`
  (without the fields added since), the reward placement as `granularity` + `weighting`."""
  saved = checkpointing.config_json(run)
  env = saved.pop("env")
  del env["contribution_threshold"]
  saved["data"]["env"] = env
  del saved["reward"]["placement"]
  saved["reward"].update(granularity=granularity, weighting=weighting)
  return saved


@pytest.mark.parametrize("granularity, weighting, placement", [
    ("step", "paper", "paper"),
    ("step", "original_code", "original_code"),
    ("final", "paper", "final_only"),
    ("summed", "paper", "summed"),
])
def test_configs_of_the_previous_layout_migrate(granularity, weighting, placement):
  run = schema.replace(RunConfig(), env__num_tasks=37, env__max_steps=4, env__unfinished_reward=-1.0,
                       reward__placement=placement)
  assert parse_run_config(old_format(run, granularity, weighting)) == run


def test_read_run_config_of_an_old_checkpoint(tmp_path):
  keys = ("lora", "value_head")
  run = schema.replace(RunConfig(), env__num_tasks=37, env__mistake_rate=0.1, reward__placement="final_only")
  save(tmp_path, trained_state(keys, False), keys, config=old_format(run, "final", "paper"))
  with checkpointing.latest_checkpoint(tmp_path) as (checkpointer, step):
    migrated = checkpointing.read_run_config(checkpointer, step)
  assert migrated == run
  assert (migrated.env.num_tasks, migrated.env.mistake_rate, migrated.reward.placement) == (37, 0.1, "final_only")
