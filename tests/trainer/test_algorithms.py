"""The algorithm records: what PPO and SFT train, how many optimizer steps an update takes (the
schedule's length), their FLOPs per step, and the data source each asks for."""

from __future__ import annotations

import pytest

from steptool_jax.config import run as run_config
from steptool_jax.config import schema
from steptool_jax.config.run import RunConfig
from steptool_jax.models.config import LoraConfig, tiny
from steptool_jax.trainer import flops
from steptool_jax.trainer.algorithms import ALGORITHMS, PPO, SFT


def ppo_config(**changes) -> RunConfig:
  return schema.replace(RunConfig(), **changes)


def sft_config(**changes) -> RunConfig:
  return schema.replace(RunConfig(), algorithm="sft", batch__size=8, **changes)


def test_every_configurable_algorithm_has_a_record():
  assert set(ALGORITHMS) == set(run_config.ALGORITHMS) == {"ppo", "sft"}
  assert ALGORITHMS["ppo"] is PPO and ALGORITHMS["sft"] is SFT
  assert all(name == record.name for name, record in ALGORITHMS.items())


@pytest.mark.parametrize("algorithm, lora, expected", [
    (PPO, False, ("params", "value_head")),
    (PPO, True, ("lora", "value_head")),
    (SFT, False, ("params",)),
    (SFT, True, ("lora",)),
])
def test_trainable_collections(algorithm, lora, expected):
  config = (ppo_config if algorithm is PPO else sft_config)(model__lora__enabled=lora)
  assert algorithm.trainable_collections(config) == expected


def test_what_each_algorithm_keeps():
  assert PPO.trains_value_head and PPO.keeps_reference
  assert not SFT.trains_value_head and not SFT.keeps_reference


@pytest.mark.parametrize("epochs, size, minibatch, accumulation, expected", [
    (4, 8, 2, 4, 4),  # the paper: one optimizer step per 8 rows, 4 epochs
    (4, 16, 2, 4, 8),
    (2, 12, 3, 2, 4),
    (1, 6, 6, 1, 1),
])
def test_ppo_optimizer_steps_per_update(epochs, size, minibatch, accumulation, expected):
  config = ppo_config(ppo__epochs=epochs, batch__size=size, batch__minibatch_size=minibatch,
                      batch__grad_accum_steps=accumulation)
  assert PPO.optimizer_steps_per_update(config) == expected


def test_sft_takes_one_optimizer_step_per_update():
  assert SFT.optimizer_steps_per_update(sft_config()) == 1
  assert SFT.optimizer_steps_per_update(schema.replace(sft_config(), batch__size=12, batch__minibatch_size=3)) == 1


def test_step_flops_by_the_number_of_passes():
  """PPO: 2 scoring forwards + epochs x (forward + backward = 3 forwards); SFT: 3 forwards."""
  model = tiny(vocab_size=128)
  seq_len = 32
  forward = flops.forward_flops_per_token(model, seq_len)
  ppo = ppo_config(ppo__epochs=3, batch__size=16)
  assert PPO.step_flops(ppo, model, None, seq_len) == pytest.approx(16 * seq_len * forward * (2 + 3 * 3))
  assert SFT.step_flops(sft_config(), model, None, seq_len) == pytest.approx(8 * seq_len * forward * 3)
  lora = LoraConfig(rank=4, alpha=8.0)
  per_token = 2 * forward + 6 * flops.lora_params(model, lora)
  assert SFT.step_flops(sft_config(), model, lora, seq_len) == pytest.approx(8 * seq_len * per_token)


class Recorder:
  """Stands in for the source constructors: records which one was asked for, with what."""

  def __init__(self, name):
    self.name = name
    self.calls = []

  def __call__(self, *args, **kwargs):
    self.calls.append((args, kwargs))
    return self.name


def test_each_algorithm_asks_for_its_data_source(monkeypatch):
  from steptool_jax.trainer import algorithms  # noqa: PLC0415
  recorders = {name: Recorder(name) for name in ("make_online_source", "step_grained_source", "sft_source")}
  for name, recorder in recorders.items():
    monkeypatch.setattr(algorithms, name, recorder)
  tokenizer, policy, rows = object(), object(), slice(0, 4)
  online = ppo_config(rollout__mode="online")
  assert PPO.make_source(online, tokenizer, policy, cache_dir="cache", local_rows=rows) == "make_online_source"
  assert recorders["make_online_source"].calls == [((online, tokenizer, policy), {"local_rows": rows})]
  offline = ppo_config()
  assert PPO.make_source(offline, tokenizer, policy, cache_dir="cache", local_rows=rows) == "step_grained_source"
  assert recorders["step_grained_source"].calls == [((offline, tokenizer), {"cache_dir": "cache", "local_rows": rows})]
  sft = sft_config(rollout__mode="online")  # SFT trains on fixed data whatever rollout.mode says
  assert SFT.make_source(sft, tokenizer, policy, cache_dir="cache", local_rows=rows) == "sft_source"
  assert recorders["sft_source"].calls == [((sft, tokenizer), {"cache_dir": "cache", "local_rows": rows})]
