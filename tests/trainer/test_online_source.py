"""Online PPO batches: rollouts of the current policy, shaped for the update; reproducible
from (seed, epoch, index, policy); an online run trains end to end (critic-free groups)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from configs import tiny
from steptool_jax import train
from steptool_jax.trainer.data_source import ONLINE_KEYS, _step_grained_collate, batch_keys
from steptool_jax.trainer.online_source import make_online_source
from tests.rollout.tiny_policy import MAX_CONTEXT_LEN, MAX_NEW_TOKENS, builtin_tokenizer, tiny_policy

MAX_STEPS = 2
BATCH = 4
GROUP = 2


def online_config(**overrides):
  config = tiny.get_config()
  config.rollout.mode = "online"
  config.rollout.group_size = GROUP
  config.rollout.width_bucket = MAX_CONTEXT_LEN  # one prompt width: one generate compile
  config.batch.size = BATCH
  config.batch.minibatch_size = 2
  config.batch.grad_accum_steps = 2
  config.data.max_context_len = MAX_CONTEXT_LEN
  config.data.max_response_len = MAX_NEW_TOKENS
  config.data.min_bucket_len = MAX_CONTEXT_LEN + MAX_NEW_TOKENS  # one length bucket
  config.data.env.num_tasks = 40  # 32 train tasks: 16 batches per epoch
  config.data.env.max_steps = MAX_STEPS
  config.update_from_flattened_dict(overrides)
  return config


@pytest.fixture(scope="module")
def source():
  config = online_config()
  made = make_online_source(config, builtin_tokenizer(), local_rows=slice(0, BATCH),
                            collate=_step_grained_collate(0, MAX_STEPS))
  return made.for_model(tiny_policy().config, None)


def test_epochs_visit_every_train_task_once(source):
  assert source.tasks_per_batch == 2 and source.steps_per_epoch == 16 and source.num_rows == 64
  for epoch in (0, 1):
    seen = [t.task_id for i in range(source.steps_per_epoch) for t in source.batch_tasks(epoch, i)]
    assert sorted(seen) == sorted(t.task_id for t in source.tasks)
  assert source.batch_tasks(0, 0) != source.batch_tasks(1, 0)


def test_a_batch_is_groups_of_rollouts_of_its_tasks(source):
  variables = tiny_policy().variables
  batch = source.batch(0, 3, variables)
  assert set(batch) == set(ONLINE_KEYS)
  width = batch["input_ids"].shape[1]
  assert width == MAX_CONTEXT_LEN + MAX_NEW_TOKENS
  for key in ("input_ids", "attention_mask", "action_mask", "step_ids"):
    assert batch[key].shape == (BATCH, width)
  assert batch["step_rewards"].shape == (BATCH, MAX_STEPS)
  np.testing.assert_array_equal(batch["group_ids"], [0, 0, 1, 1])
  np.testing.assert_array_equal(batch["action_mask"], (batch["step_ids"] >= 0).astype(np.int32))
  assert (batch["num_steps"] >= 1).all() and (batch["num_steps"] <= MAX_STEPS).all()
  # Each group's rows are episodes of its task: its query is in their text.
  tasks = source.batch_tasks(0, 3)
  for row in range(BATCH):
    text = builtin_tokenizer().decode(batch["input_ids"][row][batch["attention_mask"][row] > 0])
    assert f"User:\n{tasks[batch['group_ids'][row]].query}" in text
  stats = source.batch_stats()
  assert stats["rollout/episodes"] == BATCH and 0 <= stats["rollout/failed_call_rate"] <= 1
  # A pure function of (seed, epoch, index, policy): the same call gives the same rows.
  again = source.batch(0, 3, variables)
  for key in batch:
    np.testing.assert_array_equal(again[key], batch[key])


def test_rollouts_need_the_policy(source):
  unbound = make_online_source(online_config(), builtin_tokenizer(), local_rows=slice(0, BATCH),
                               collate=_step_grained_collate(0, MAX_STEPS))
  with pytest.raises(ValueError, match="need the current policy"):
    unbound.batch(0, 0, tiny_policy().variables)
  with pytest.raises(IndexError):
    source.batch(0, 16, tiny_policy().variables)


def test_online_keys_only_for_online_ppo():
  assert batch_keys(online_config()) == ONLINE_KEYS
  assert "group_ids" not in batch_keys(tiny.get_config())
  assert batch_keys(tiny.get_config("sft")) == ("input_ids", "attention_mask", "loss_mask")


@pytest.mark.parametrize("overrides, message", [
    ({"batch.size": 6, "batch.grad_accum_steps": 3, "rollout.group_size": 4},
     "batch.size: expected a multiple of rollout.group_size (4)"),
    ({"data.train_path": __file__}, "data.train_path: rollout.mode='online' plays the built-in environment"),
    ({"ppo.advantage_estimator": "group", "ppo.vf_coef": 0.1}, "ppo.vf_coef: 'group' advantages train no value head"),
    ({"ppo.advantage_estimator": "group", "ppo.vf_coef": 0.0, "rollout.group_size": 1},
     "ppo.advantage_estimator: 'group' normalises returns"),
])
def test_online_config_mistakes_name_their_field(overrides, message):
  from steptool_jax.trainer.config_checks import validate  # noqa: PLC0415
  with pytest.raises(ValueError) as error:
    validate(online_config(**overrides), num_devices=1)
  assert str(error.value).startswith(message)


def test_online_critic_free_run_trains_on_its_own_rollouts(tmp_path):
  config = online_config(**{"ppo.advantage_estimator": "group", "ppo.vf_coef": 0.0, "ppo.epochs": 1,
                            "train.num_steps": 2, "checkpoint.every_steps": 2, "log.progress_bar": False,
                            "log.tensorboard": False, "optim.learning_rate": 1e-3})
  result = train.train_and_evaluate(config, tmp_path, devices=jax.devices()[:1])
  assert result.status == "finished" and result.step == 2
  metrics = result.last_metrics
  assert metrics["rollout/episodes"] == BATCH and metrics["rows"] == BATCH
  assert {"rollout/solved_rate", "rollout/failed_call_rate", "rollout/steps", "kl_loss"} <= set(metrics)
  # A random policy fails every step alike: no spread in any group, so every advantage is 0,
  # and the critic-free path has no value target.
  assert metrics["advantages/mean"] == 0.0 and metrics["advantages/std"] == 0.0 and metrics["returns/mean"] == 0.0
  assert np.isfinite(metrics["loss"])
