"""Online PPO batches: rollouts of the current policy, shaped for the update; reproducible
from (seed, epoch, index, policy); an online run trains end to end (critic-free groups)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from configs import tiny
from steptool_jax import train
from steptool_jax.config.run import parse_run_config
from steptool_jax.trainer.algorithms import ALGORITHMS
from steptool_jax.trainer.sources.batches import ONLINE_KEYS, SFT_KEYS, STEP_GRAINED_KEYS
from steptool_jax.trainer.sources.online import make_online_source
from tests.config.test_run import validate
from tests.rollout.tiny_policy import MAX_CONTEXT_LEN, MAX_NEW_TOKENS, builtin_tokenizer, tiny_policy
from tests.trainer.fixtures import data_cache, tiny_run_config  # noqa: F401 (fixture)

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
  config.env.num_tasks = 40  # 32 train tasks: 16 batches per epoch
  config.env.max_steps = MAX_STEPS
  config.update_from_flattened_dict(overrides)
  return config


@pytest.fixture(scope="module")
def source():
  return make_online_source(parse_run_config(online_config()), builtin_tokenizer(), tiny_policy(),
                            local_rows=slice(0, BATCH))


def test_epochs_visit_every_train_task_once(source):
  assert source.tasks_per_batch == 2 and source.steps_per_epoch == 16 and source.num_rows == 64
  for epoch in (0, 1):
    seen = [t.task_id for i in range(source.steps_per_epoch) for t in source.batch_tasks(epoch, i)]
    assert sorted(seen) == sorted(t.task_id for t in source.tasks)
  assert source.batch_tasks(0, 0) != source.batch_tasks(1, 0)


def test_a_batch_is_groups_of_rollouts_of_its_tasks(source):
  variables = tiny_policy().variables
  batch, stats = source.batch(0, 3, variables)
  assert set(batch) == set(ONLINE_KEYS) == set(source.keys)
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
  assert stats["rollout/episodes"] == BATCH and 0 <= stats["rollout/failed_call_rate"] <= 1
  # A pure function of (seed, epoch, index, policy): the same call gives the same rows.
  again, again_stats = source.batch(0, 3, variables)
  for key in batch:
    np.testing.assert_array_equal(again[key], batch[key])
  assert again_stats == stats


@pytest.mark.parametrize("reuse", [True, False])
def test_rollout_reuse_cache_reaches_the_acting_policy(reuse, monkeypatch):
  from steptool_jax.trainer.sources import online  # noqa: PLC0415
  made = []
  monkeypatch.setattr(online, "model_policy", lambda *args, **kwargs: made.append(kwargs) or None)

  class Played(Exception):
    pass

  def collect(*args, **kwargs):
    raise Played  # the acting policy was made: no need to play
  monkeypatch.setattr(online, "collect", collect)
  source = make_online_source(parse_run_config(online_config(**{"rollout.reuse_cache": reuse})), builtin_tokenizer(),
                              tiny_policy(), local_rows=slice(0, BATCH))
  with pytest.raises(Played):
    source.batch(0, 0, tiny_policy().variables)
  assert [kwargs["reuse_cache"] for kwargs in made] == [reuse]


def test_batches_outside_the_epoch_are_refused(source):
  with pytest.raises(IndexError):
    source.batch(0, 16, tiny_policy().variables)


def test_online_keys_only_for_online_ppo(data_cache):
  """The algorithms' sources: online PPO batches carry group ids, offline PPO and SFT do not."""
  def keys(config):
    run = parse_run_config(config)
    made = ALGORITHMS[run.algorithm].make_source(run, builtin_tokenizer(), tiny_policy(), cache_dir=data_cache,
                                                 local_rows=slice(0, run.batch.size))
    return made.keys
  assert keys(online_config()) == ONLINE_KEYS
  assert keys(tiny_run_config(data_cache)) == STEP_GRAINED_KEYS and "group_ids" not in STEP_GRAINED_KEYS
  assert keys(tiny_run_config(data_cache, "sft")) == SFT_KEYS == ("input_ids", "attention_mask", "loss_mask")


@pytest.mark.parametrize("overrides, message", [
    ({"batch.size": 6, "batch.grad_accum_steps": 3, "rollout.group_size": 4},
     "batch.size: expected a multiple of rollout.group_size (4)"),
    ({"data.train_path": __file__}, "data.train_path: rollout.mode='online' plays the built-in environment"),
    ({"ppo.advantage_estimator": "group", "ppo.vf_coef": 0.1}, "ppo.vf_coef: 'group' advantages train no value head"),
    ({"ppo.advantage_estimator": "group", "ppo.vf_coef": 0.0, "rollout.group_size": 1},
     "ppo.advantage_estimator: 'group' normalises returns"),
])
def test_online_config_mistakes_name_their_field(overrides, message):
  with pytest.raises(ValueError) as error:
    validate(online_config(**overrides), num_devices=1)
  assert str(error.value).startswith(message)


def test_online_critic_free_run_trains_on_its_own_rollouts(tmp_path):
  config = online_config(**{"ppo.advantage_estimator": "group", "ppo.vf_coef": 0.0, "ppo.epochs": 1,
                            "train.num_steps": 1, "checkpoint.every_steps": 1, "log.progress_bar": False,
                            "log.tensorboard": False, "optim.learning_rate": 1e-3})
  result = train.train_and_evaluate(config, tmp_path, devices=jax.devices()[:1])
  assert result.status == "finished" and result.step == 1
  metrics = result.last_metrics
  assert metrics["rollout/episodes"] == BATCH and metrics["rows"] == BATCH
  assert {"rollout/solved_rate", "rollout/failed_call_rate", "rollout/steps", "kl_loss"} <= set(metrics)
  # A random policy fails every step alike: no spread in any group, so every advantage is 0,
  # and the critic-free path has no value target.
  assert metrics["advantages/mean"] == 0.0 and metrics["advantages/std"] == 0.0 and metrics["returns/mean"] == 0.0
  assert np.isfinite(metrics["loss"])


# --- process slices of an online batch (multi-process runs) -----------------------------------------


def _sliced_source(monkeypatch, num_tasks: int, local_rows: slice):
  """An `OnlineSource` whose rollouts are faked (no model): group g's episodes have 10 + 30 g
  tokens, so the groups of a batch need different length buckets."""
  import types  # noqa: PLC0415

  from steptool_jax.envs.settings import EnvSettings  # noqa: PLC0415
  from steptool_jax.trainer.sources import online  # noqa: PLC0415
  from steptool_jax.trainer.sources.offline import step_grained_collate  # noqa: PLC0415

  def fake_collect(tasks, acting, tokenizer, settings, *, rows):
    groups = [g for g in range(len(tasks)) for _ in range(settings.group_size)][rows]
    examples = []
    for g in groups:
      length = 10 + 30 * g
      examples.append({"input_ids": list(range(1, length + 1)), "action_mask": [0] * (length - 2) + [1, 1],
                       "step_ids": [-1] * (length - 2) + [0, 0], "step_rewards": [1.0], "num_steps": 1,
                       "group_id": g})
    return types.SimpleNamespace(examples=tuple(examples), summaries=lambda: [])

  monkeypatch.setattr(online, "collect", fake_collect)
  monkeypatch.setattr(online, "model_policy", lambda *args, **kwargs: None)
  tasks = EnvSettings(num_tasks=20).tasks()["train"][:num_tasks]
  return online.OnlineSource(
      tasks=tasks, tokenizer=None, model_config=tiny_policy().config, lora=None,
      settings=types.SimpleNamespace(group_size=GROUP, template="toolllama"), sampling=None, stops=None,
      batch_size=BATCH, seed=0, buckets=(16, 32, 64), widths=(64,), generation_batch=BATCH, reuse_cache=True,
      collate=step_grained_collate(0, MAX_STEPS), local_rows=local_rows)


def test_a_process_without_rows_of_the_short_last_batch_collates_padding(monkeypatch):
  source = _sliced_source(monkeypatch, 7, slice(2, 4))  # 7 tasks: the last batch is 1 task, rows 0-1
  batch, _ = source.batch(0, 3, {})
  assert batch["input_ids"].shape[0] == 2 and not batch["attention_mask"].any()
  np.testing.assert_array_equal(batch["group_ids"], [-1, -1])


def test_process_slices_of_an_online_batch_share_the_width_of_the_whole(monkeypatch):
  """Two processes' rows of batch 0 (groups 0 and 1: episodes of 10 and 40 tokens): each pads
  to the width of the longest episode of both (the collective is faked: the other process's
  longest is given), so the two parts are the whole batch's rows."""
  from steptool_jax.trainer.sources import online  # noqa: PLC0415
  whole, _ = _sliced_source(monkeypatch, 8, slice(0, BATCH)).batch(0, 0, {})
  parts = []
  for rows, others_longest in ((slice(0, 2), 40), (slice(2, 4), 10)):
    monkeypatch.setattr(online.distributed, "global_max", lambda value, other=others_longest: max(value, other))
    parts.append(_sliced_source(monkeypatch, 8, rows).batch(0, 0, {})[0])
  assert [part["input_ids"].shape[1] for part in parts] == [whole["input_ids"].shape[1]] * 2 == [64, 64]
  for key in whole:
    np.testing.assert_array_equal(np.concatenate([part[key] for part in parts]), whole[key])
