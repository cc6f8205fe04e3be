"""One supervised fine-tuning step on conversations, as one pure function to jit.

    update(state, batch, rng) -> (state, metrics)

The loss is the mean negative log-likelihood of the assistant-action tokens (`loss_mask`)
over the whole batch: summed over `grad_accum_steps` micro-batches of `minibatch_size`
rows (`updates.accumulate`), divided by the batch's token count, applied in one optimizer
step. Padding rows (a short last batch) therefore weigh nothing. The state and its
checkpoints are the ones of the PPO trainer, so PPO can start from an SFT run.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import optax

from steptool_jax.config.run import RunConfig
from steptool_jax.models.config import LoraConfig, ModelConfig
from steptool_jax.models.llama import CausalLM
from steptool_jax.models.policy import score_tokens
from steptool_jax.trainer.state import TrainState, split_trainable
from steptool_jax.trainer.updates.accumulate import accumulate_gradients, nonfinite_flag
from steptool_jax.trainer.updates.ppo import UpdateFn
from steptool_jax.trainer.updates.rows import constrain_rows, rows_in_batch, strided_split

def make_sft_update(model_config: ModelConfig, lora: LoraConfig | None, config: RunConfig,
                    optimizer: optax.GradientTransformation, trainable_keys: tuple[str, ...],
                    critic_optimizer: optax.GradientTransformation | None = None) -> UpdateFn:
  del critic_optimizer  # SFT trains no critic
  dropout = lora is not None and lora.dropout > 0
  model = CausalLM(model_config, lora, deterministic=not dropout)
  grad_accum_steps, chunk_size = config.batch.grad_accum_steps, config.model.logits_chunk

  def loss_fn(trainable, frozen, micro: Mapping[str, jax.Array], rng: jax.Array):
    """Summed NLL of the micro-batch's loss tokens (divided by the whole batch's count later)."""
    micro = {k: constrain_rows(v) for k, v in micro.items()}
    scores = score_tokens(model, {**frozen, **trainable}, micro["input_ids"], micro["attention_mask"],
                          use_lora=True, with_values=False, rngs={"dropout": rng} if dropout else None,
                          chunk_size=chunk_size)
    on = micro["loss_mask"] > 0
    total = -jnp.sum(jnp.where(on, scores.logp, 0))
    return total, {"nll_sum": total, "loss_tokens": jnp.sum(on).astype(jnp.float32)}

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def update(state: TrainState, batch: Mapping[str, jax.Array], rng: jax.Array):
    trainable, frozen = split_trainable(state.policy, trainable_keys)
    micro_batches = {k: strided_split(v, grad_accum_steps) for k, v in batch.items()}
    grads_sum, _, per_micro = accumulate_gradients(
        lambda params, micro, micro_rng: grad_fn(params, frozen, micro, micro_rng), trainable, micro_batches,
        jax.random.split(rng, grad_accum_steps))
    # The token mean over the whole batch: padding rows and empty micro-batches weigh nothing.
    tokens = jnp.maximum(jnp.sum(per_micro["loss_tokens"]), 1.0)
    grads = jax.tree.map(lambda g: g / tokens, grads_sum)
    updates, opt_state = optimizer.update(grads, state.opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    new_state = state.replace(step=state.step + 1, policy={**frozen, **trainable}, opt_state=opt_state)
    metrics = {
        "loss": jnp.sum(per_micro["nll_sum"]) / tokens,
        "grad_norm": optax.tree.norm(grads),
        "rows": rows_in_batch(batch["attention_mask"]),
        "tokens": jnp.sum(batch["attention_mask"]).astype(jnp.float32),
        "loss_tokens": jnp.sum(per_micro["loss_tokens"]),
    }
    metrics["nonfinite"] = nonfinite_flag(trainable, metrics["loss"], metrics["grad_norm"])
    return new_state, metrics

  return update
