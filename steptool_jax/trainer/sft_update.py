"""One supervised fine-tuning step on conversations, as one pure function to jit.

    update(state, batch, rng) -> (state, metrics)

The loss is the mean negative log-likelihood of the assistant-action tokens (`loss_mask`)
of each micro-batch; gradients are averaged over `grad_accum_steps` micro-batches of
`minibatch_size` rows (a `lax.scan`) and applied in one optimizer step. The state and
its checkpoints are the ones of the PPO trainer, so PPO can start from an SFT run.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax

from steptool_jax.models.config import LoraConfig, ModelConfig
from steptool_jax.models.llama import CausalLM
from steptool_jax.models.policy import score_tokens
from steptool_jax.rl.masked import masked_mean
from steptool_jax.trainer.ppo_update import UpdateFn
from steptool_jax.trainer.state import TrainState, split_trainable
from steptool_jax.trainer.update_utils import all_finite, constrain_rows, rows_in_batch, strided_split


@dataclasses.dataclass(frozen=True)
class SFTSettings:
  minibatch_size: int = 2
  grad_accum_steps: int = 4
  logits_chunk: int = 512

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> SFTSettings:
    return cls(minibatch_size=config.batch.minibatch_size, grad_accum_steps=config.batch.grad_accum_steps,
               logits_chunk=config.model.logits_chunk)


def make_sft_update(model_config: ModelConfig, lora: LoraConfig | None, settings: SFTSettings,
                    optimizer: optax.GradientTransformation, trainable_keys: tuple[str, ...]) -> UpdateFn:
  dropout = lora is not None and lora.dropout > 0
  model = CausalLM(model_config, lora, deterministic=not dropout)
  s = settings

  def loss_fn(trainable, frozen, micro: Mapping[str, jax.Array], rng: jax.Array):
    micro = {k: constrain_rows(v) for k, v in micro.items()}
    scores = score_tokens(model, {**frozen, **trainable}, micro["input_ids"], micro["attention_mask"],
                          use_lora=True, with_values=False, rngs={"dropout": rng} if dropout else None,
                          chunk_size=s.logits_chunk)
    loss = -masked_mean(scores.logp, micro["loss_mask"])
    return loss, {"loss": loss, "loss_tokens": jnp.sum(micro["loss_mask"]).astype(jnp.float32)}

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def update(state: TrainState, batch: Mapping[str, jax.Array], rng: jax.Array):
    trainable, frozen = split_trainable(state.policy, trainable_keys)
    micro_batches = {k: strided_split(batch[k], s.grad_accum_steps) for k in ("input_ids", "attention_mask", "loss_mask")}

    def accumulate(grads_sum, xs):
      micro, micro_rng = xs
      (_, metrics), grads = grad_fn(trainable, frozen, micro, micro_rng)
      return jax.tree.map(lambda a, g: a + g.astype(a.dtype), grads_sum, grads), metrics

    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), trainable)
    grads_sum, per_micro = jax.lax.scan(accumulate, zeros, (micro_batches, jax.random.split(rng, s.grad_accum_steps)))
    grads = jax.tree.map(lambda g: g / s.grad_accum_steps, grads_sum)
    updates, opt_state = optimizer.update(grads, state.opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    new_state = state.replace(step=state.step + 1, policy={**frozen, **trainable}, opt_state=opt_state)
    metrics = {
        "loss": jnp.mean(per_micro["loss"]),
        "grad_norm": optax.tree.norm(grads),
        "rows": rows_in_batch(batch["attention_mask"]),
        "tokens": jnp.sum(batch["attention_mask"]).astype(jnp.float32),
        "loss_tokens": jnp.sum(per_micro["loss_tokens"]),
    }
    metrics["nonfinite"] = 1.0 - (all_finite(trainable) & jnp.isfinite(metrics["loss"])
                                  & jnp.isfinite(metrics["grad_norm"])).astype(jnp.float32)
    return new_state, metrics

  return update
