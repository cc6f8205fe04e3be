"""The training algorithms as records: what each uses, so `train.py` asks instead of branching.

    algorithm = ALGORITHMS[config.algorithm]
    source = algorithm.make_source(config, tokenizer, policy, cache_dir=..., local_rows=...)
    update = algorithm.make_update(model_config, lora, config, optimizer, trainable_keys)

A record names the data source it trains on (and through it the batch keys), its jitted
update, its FLOPs per step (for MFU), the policy collections it trains, whether it needs a
frozen reference copy of the starting weights (PPO's KL when training without LoRA) and how
many optimizer steps one update takes (for the learning-rate schedule). A new algorithm
(DPO, rejection-sampling fine-tuning, ...) is a new record here.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable

import optax

from steptool_jax.config.run import RunConfig
from steptool_jax.models.config import LoraConfig, ModelConfig
from steptool_jax.models.policy import Policy
from steptool_jax.trainer import flops, optimizer
from steptool_jax.trainer.sources.batches import DataSource
from steptool_jax.trainer.sources.offline import sft_source, step_grained_source
from steptool_jax.trainer.sources.online import make_online_source
from steptool_jax.trainer.updates.ppo import UpdateFn, make_ppo_update
from steptool_jax.trainer.updates.sft import make_sft_update

# make_update(model_config, lora, config, optimizer, trainable_keys, critic_optimizer) -> UpdateFn
MakeUpdate = Callable[[ModelConfig, LoraConfig | None, RunConfig, optax.GradientTransformation, tuple[str, ...],
                       optax.GradientTransformation | None], UpdateFn]


@dataclasses.dataclass(frozen=True)
class Algorithm:
  name: str
  trains_value_head: bool
  keeps_reference: bool  # without LoRA, a frozen copy of the starting weights is the reference policy
  # make_source(config, tokenizer, policy, cache_dir=, local_rows=) -> DataSource
  make_source: Callable[..., DataSource]
  make_update: MakeUpdate
  # step_flops(config, model_config, lora, seq_len) -> model FLOPs of one update on a batch of that width
  step_flops: Callable[[RunConfig, ModelConfig, LoraConfig | None, int], float]
  optimizer_steps_per_update: Callable[[RunConfig], int]

  def trainable_collections(self, config: RunConfig) -> tuple[str, ...]:
    """The policy's trained collections (a separate critic trains its own value head)."""
    return optimizer.trainable_collections(lora=config.model.lora.enabled,
                                           value_head=self.trains_value_head and not config.separate_critic)


def _ppo_source(config: RunConfig, tokenizer: Any, policy: Policy, *, cache_dir: pathlib.Path,
                local_rows: slice) -> DataSource:
  if config.online:
    return make_online_source(config, tokenizer, policy, local_rows=local_rows)
  return step_grained_source(config, tokenizer, cache_dir=cache_dir, local_rows=local_rows)


def _sft_source(config: RunConfig, tokenizer: Any, policy: Policy, *, cache_dir: pathlib.Path,
                local_rows: slice) -> DataSource:
  del policy  # fixed data
  return sft_source(config, tokenizer, cache_dir=cache_dir, local_rows=local_rows)


PPO = Algorithm(
    name="ppo", trains_value_head=True, keeps_reference=True, make_source=_ppo_source, make_update=make_ppo_update,
    step_flops=lambda config, model_config, lora, seq_len: flops.ppo_update_flops(
        model_config, lora, rows=config.batch.size, seq_len=seq_len, epochs=config.ppo.epochs),
    optimizer_steps_per_update=lambda config: config.ppo.epochs * config.batch.size
    // config.batch.rows_per_optimizer_step)

SFT = Algorithm(
    name="sft", trains_value_head=False, keeps_reference=False, make_source=_sft_source,
    make_update=make_sft_update,
    step_flops=lambda config, model_config, lora, seq_len: flops.sft_step_flops(
        model_config, lora, rows=config.batch.size, seq_len=seq_len),
    optimizer_steps_per_update=lambda config: 1)

ALGORITHMS = {algorithm.name: algorithm for algorithm in (PPO, SFT)}
