"""One PPO iteration on a step-grained batch, as one pure function to jit.

    update(state, batch, rng) -> (state, metrics)

1. Rollout statistics with the current policy, in minibatch-sized chunks: old log-probs and
   values (one forward), reference log-probs (a second forward: LoRA switched off, or the
   frozen reference copy when training without LoRA), and the per-token KL penalty.
2. Advantages from the run's estimator (`updates.advantages`: GAE over the KL-penalised
   token rewards, or the critic-free group estimator), which may hand the loss extra inputs.
3. `epochs` passes over the batch, each a fresh random split into optimizer steps of
   `grad_accum_steps` micro-batches of `minibatch_size` rows. Gradients are summed over the
   micro-batches (`updates.accumulate`) and averaged over those the ratio guard kept (a
   micro-batch without action tokens is never kept); an optimizer step whose every
   micro-batch was skipped leaves the trainable variables and the optimizer state exactly
   as they were. Reported statistics are token-weighted over the micro-batches.
4. The KL controller sees the batch's mean sequence KL (over real rows, not padding rows).

The three stages are separate functions (`make_ppo_stages`) so that the benchmark can
time them apart; `make_ppo_update` composes them and adds the KL controller and metrics.
Every per-token statistic is a masked mean, so the empty rows that pad a short last batch
contribute nothing and cannot make a NaN. The settings are the run config's typed sections
(`ppo`, `reward`, `batch`, `model.logits_chunk`, `model.value_head_dropout`); the math lives
in `steptool_jax.rl` and `steptool_jax.rewards.placement` (docs/rl.md, section 6).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax

from steptool_jax.config.run import RunConfig
from steptool_jax.models.config import LoraConfig, ModelConfig
from steptool_jax.models.llama import CausalLM
from steptool_jax.models.lora import LORA_COLLECTION
from steptool_jax.models.policy import score_tokens, token_values
from steptool_jax.models.value_head import ValueHead
from steptool_jax.rewards.placement import place_step_rewards
from steptool_jax.rl.kl import kl_penalty
from steptool_jax.rl.kl_controller import update_kl_controller
from steptool_jax.rl.masked import explained_variance, masked_mean, masked_var
from steptool_jax.rl.normalize import running_std, update_moments
from steptool_jax.rl.ppo import ppo_loss
from steptool_jax.trainer.state import TrainState, split_trainable
from steptool_jax.trainer.updates.accumulate import accumulate_gradients, nonfinite_flag
from steptool_jax.trainer.updates.advantages import Estimate, RolloutStats, make_estimator
from steptool_jax.trainer.updates.rows import constrain_rows, in_chunks, rows_in_batch

Batch = Mapping[str, jax.Array]
UpdateFn = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict[str, jax.Array]]]


def _weighted_mean(x: jax.Array, weights: jax.Array) -> jax.Array:
  """Mean of `x` weighted by `weights` (same shape); 0 when every weight is 0."""
  return jnp.sum(x * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def micro_batch_rows(rng: jax.Array, num_rows: int, minibatch_size: int, grad_accum_steps: int) -> jax.Array:
  """`[optimizer steps, grad_accum_steps, minibatch_size]` row indices: a random split of the batch."""
  return jax.random.permutation(rng, num_rows).reshape(-1, grad_accum_steps, minibatch_size)


def reward_per_step(step_rewards: jax.Array, num_steps: jax.Array) -> jax.Array:
  """`[S]`: mean reward of step position s over the rows that have an s-th step."""
  present = jnp.arange(step_rewards.shape[-1]) < num_steps[:, None]
  return jnp.sum(jnp.where(present, step_rewards, 0), axis=0) / jnp.maximum(jnp.sum(present, axis=0), 1)


class Optimized(NamedTuple):
  """What the PPO passes produce: the policy's trained collections and optimizer state, the
  separate critic's (None with a shared one), and per-optimizer-step metrics `[epochs, steps]`."""

  trainable: Any
  opt_state: Any
  critic: Any
  critic_opt_state: Any
  per_step: dict[str, jax.Array]


class PPOStages(NamedTuple):
  """The three stages of an update, each a pure function (the benchmark times them apart).

  rollout_statistics(state, batch) -> RolloutStats (old log-probs, values, reference, KL)
  advantages(state, batch, stats) -> Estimate (the run's advantage estimator)
  optimize(state, batch, stats, estimate, rng) -> Optimized
  """

  rollout_statistics: Callable[..., RolloutStats]
  advantages: Callable[..., Estimate]
  optimize: Callable[..., Optimized]


def critic_trunk(policy: Mapping[str, Any], critic: Mapping[str, Any]) -> dict[str, Any]:
  """The variables of a separate critic's trunk: its own full copy (`params`), or, under LoRA,
  the policy's frozen base with the critic's own adapters."""
  if "params" in critic:
    return {"params": critic["params"]}
  return {"params": policy["params"], LORA_COLLECTION: critic[LORA_COLLECTION]}


def make_ppo_stages(model_config: ModelConfig, lora: LoraConfig | None, config: RunConfig,
                    optimizer: optax.GradientTransformation, trainable_keys: tuple[str, ...],
                    critic_optimizer: optax.GradientTransformation | None = None) -> PPOStages:
  """The stages of the update; `critic_optimizer` trains a separate critic (`ppo.critic`)."""
  ppo, batch_section, chunk_size = config.ppo, config.batch, config.model.logits_chunk
  head_dropout = config.model.value_head_dropout
  estimator = make_estimator(config)
  separate = config.separate_critic
  if separate and critic_optimizer is None:
    raise ValueError("ppo.critic: 'separate' needs an optimizer for the critic")
  behaviour = ppo.old_logp == "behaviour"
  stats_model = CausalLM(model_config, lora, deterministic=True)
  dropout = (lora is not None and lora.dropout > 0) or head_dropout > 0
  train_model = CausalLM(model_config, lora, deterministic=not dropout)
  train_head = ValueHead(head_dropout, deterministic=not dropout)
  with_entropy = ppo.entropy_coef > 0
  minibatch_size, grad_accum_steps = batch_section.minibatch_size, batch_section.grad_accum_steps

  def rollout_statistics(state: TrainState, batch: Batch) -> RolloutStats:
    """Old log-probs and values, reference log-probs, chunk by chunk: one policy forward
    (values from its value head) and one reference forward; a separate critic adds its own
    forward, and behaviour log-probs (`ppo.old_logp`) drop the policy's log-prob head."""
    def chunk(ids, attention):
      logp = values = None
      if separate:
        values = token_values(stats_model, critic_trunk(state.policy, state.critic), state.critic["value_head"],
                              ids, attention)
        if not behaviour:
          logp = score_tokens(stats_model, state.policy, ids, attention, use_lora=True, with_values=False,
                              chunk_size=chunk_size).logp
      elif behaviour:
        values = token_values(stats_model, state.policy, state.policy["value_head"], ids, attention)
      else:
        policy = score_tokens(stats_model, state.policy, ids, attention, use_lora=True, with_values=True,
                              chunk_size=chunk_size)
        logp, values = policy.logp, policy.values
      if state.reference is None:  # LoRA: the reference is the base model, adapters off
        reference = score_tokens(stats_model, state.policy, ids, attention, use_lora=False, with_values=False,
                                 chunk_size=chunk_size)
      else:
        reference = score_tokens(stats_model, {"params": state.reference}, ids, attention, use_lora=False,
                                 with_values=False, chunk_size=chunk_size)
      return (logp if logp is not None else jnp.zeros_like(values)), values, reference.logp
    old_logp, old_values, ref_logp = in_chunks(chunk, minibatch_size, batch["input_ids"], batch["attention_mask"])
    if behaviour:  # the sampling policy's own log-probs, carried from the rollout
      old_logp = jnp.where(batch["action_mask"] > 0, batch["behaviour_logp"], 0.0)
    return RolloutStats(old_logp=old_logp, old_values=old_values, ref_logp=ref_logp,
                        kl=kl_penalty(old_logp, ref_logp, config.reward.kl_penalty))

  def advantages(state: TrainState, batch: Batch, stats: RolloutStats) -> Estimate:
    return estimator.estimate(batch, stats, state.kl.value)

  def loss_fn(trainable, frozen, critic, micro: Mapping[str, jax.Array], rng: jax.Array, kl_coef: jax.Array):
    # A micro-batch of padding rows only (a short last batch) has nothing to learn from:
    # it counts neither in the gradient average nor in the statistics.
    tokens = jnp.sum(micro["action_mask"] > 0).astype(jnp.float32)
    micro = {k: constrain_rows(v) for k, v in micro.items()}
    policy_variables = {**frozen, **trainable}
    rngs = {"dropout": rng} if dropout else None
    scores = score_tokens(train_model, policy_variables, micro["input_ids"], micro["attention_mask"],
                          use_lora=True, with_entropy=with_entropy, with_values=not separate, value_head=train_head,
                          rngs=rngs, chunk_size=chunk_size)
    values = scores.values
    if separate:  # the value loss reaches the critic's variables only
      values = token_values(train_model, critic_trunk(policy_variables, critic), critic["value_head"],
                            micro["input_ids"], micro["attention_mask"], value_head=train_head, rngs=rngs)
    loss, metrics = ppo_loss(
        scores.logp, micro["old_logp"], values, micro["old_values"], micro["advantages"], micro["returns"],
        micro["action_mask"], clip_eps=ppo.clip_eps, value_clip=ppo.value_clip, vf_coef=ppo.vf_coef,
        ratio_threshold=ppo.ratio_threshold, kl_loss_kind=config.reward.kl_penalty, entropy=scores.entropy,
        entropy_coef=ppo.entropy_coef, **estimator.loss_terms(micro, kl_coef))
    return loss, {**metrics, "tokens": tokens}

  grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 2), has_aux=True)

  def kept(metrics: Mapping[str, jax.Array]) -> jax.Array:
    return (metrics["tokens"] > 0) & (metrics["skipped"] == 0)

  def keep_if(condition: jax.Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda n, o: jnp.where(condition, n, o), new, old)

  def optimizer_step(carry, xs, *, per_token, frozen, kl_coef, warm):
    """One optimizer step: gradients accumulated over `grad_accum_steps` micro-batches, then
    the policy's optimizer (not during the critic's warm-up) and the separate critic's."""
    trainable, opt_state, critic, critic_opt_state = carry
    step_rows, rngs = xs
    micro_batches = {k: jnp.take(v, step_rows, axis=0) for k, v in per_token.items()}  # [accum, mb, ...]
    (grads_sum, critic_grads_sum), num_kept, metrics = accumulate_gradients(
        lambda params, micro, rng: grad_fn(params[0], frozen, params[1], micro, rng, kl_coef), (trainable, critic),
        micro_batches, rngs, keep=kept)
    grads = jax.tree.map(lambda g: g / jnp.maximum(num_kept, 1.0), grads_sum)
    moved = num_kept > 0
    policy_grads = grads
    if warm is not None and not separate:  # warm-up of a shared critic: only the value head learns
      policy_grads = {k: (g if k == "value_head" else jax.tree.map(lambda x: jnp.where(warm, 0.0, x), g))
                      for k, g in grads.items()}
    updates, new_opt_state = optimizer.update(policy_grads, opt_state, trainable)
    new_trainable = optax.apply_updates(trainable, updates)
    if warm is not None and separate:  # the policy waits: its variables and optimizer state stay as they were
      new_trainable, new_opt_state = keep_if(~warm, (new_trainable, new_opt_state), (trainable, opt_state))
    elif warm is not None:  # a shared critic is its value head: only that moves (the trunk's moments stay 0)
      new_trainable = {k: v if k == "value_head" else keep_if(~warm, v, trainable[k]) for k, v in new_trainable.items()}
    trainable, opt_state = keep_if(moved, (new_trainable, new_opt_state), (trainable, opt_state))
    if separate:
      critic_grads = jax.tree.map(lambda g: g / jnp.maximum(num_kept, 1.0), critic_grads_sum)
      critic_updates, new_critic_opt_state = critic_optimizer.update(critic_grads, critic_opt_state, critic)
      critic, critic_opt_state = keep_if(moved, (optax.apply_updates(critic, critic_updates), new_critic_opt_state),
                                         (critic, critic_opt_state))
    # Statistics are token-weighted over the micro-batches: an epoch's value is then the mean
    # over all its action tokens, comparable from one epoch (one random split) to the next.
    tokens = metrics.pop("tokens")
    metrics = {k: _weighted_mean(v, tokens) for k, v in metrics.items()}
    metrics["grad_norm"] = optax.tree.norm(grads)
    if separate:
      metrics["critic/grad_norm"] = optax.tree.norm(critic_grads)
    metrics["tokens"] = jnp.sum(tokens)
    # Skipped by the ratio guard (not merely empty): it had action tokens, nothing was kept.
    metrics["optimizer_step_skipped"] = ((jnp.sum(tokens) > 0) & ~moved).astype(jnp.float32)
    return (trainable, opt_state, critic, critic_opt_state), metrics

  def optimize(state: TrainState, batch: Batch, stats: RolloutStats, estimate: Estimate, rng: jax.Array
               ) -> Optimized:
    """`epochs` passes, each a fresh random split of the batch; all epochs' optimizer steps
    run in one scan, each gathering its micro-batches by row index."""
    num_rows = batch["input_ids"].shape[0]
    per_token = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                 "action_mask": batch["action_mask"], "old_logp": stats.old_logp, "old_values": stats.old_values,
                 "advantages": estimate.used_advantages, "returns": estimate.returns, **estimate.loss_inputs}
    shuffle_rng, dropout_rng = jax.random.split(rng)
    rows = jax.vmap(lambda key: micro_batch_rows(key, num_rows, minibatch_size, grad_accum_steps))(
        jax.random.split(shuffle_rng, ppo.epochs))
    steps_per_epoch = rows.shape[1]
    rows = rows.reshape((-1,) + rows.shape[2:])  # [epochs x steps, accumulation, minibatch]
    dropout_rngs = jax.random.split(dropout_rng, rows.shape[0] * grad_accum_steps).reshape(rows.shape[:2])
    trainable, frozen = split_trainable(state.policy, trainable_keys)
    critic = state.critic if separate else {}
    warm = state.step < ppo.critic_warmup_updates if ppo.critic_warmup_updates else None
    step_fn = functools.partial(optimizer_step, per_token=per_token, frozen=frozen, kl_coef=state.kl.value,
                                warm=warm)
    (trainable, opt_state, critic, critic_opt_state), per_step = jax.lax.scan(
        step_fn, (trainable, state.opt_state, critic, state.critic_opt_state), (rows, dropout_rngs))
    per_step = jax.tree.map(lambda x: x.reshape(ppo.epochs, steps_per_epoch), per_step)
    return Optimized(trainable, opt_state, critic if separate else None, critic_opt_state, per_step)

  return PPOStages(rollout_statistics, advantages, optimize)


def _row_returns(placed: jax.Array) -> jax.Array:
  """`[B]`: each row's return, the sum of its placed step rewards (the task reward, no KL)."""
  return jnp.sum(placed, axis=-1)


def make_ppo_update(model_config: ModelConfig, lora: LoraConfig | None, config: RunConfig,
                    optimizer: optax.GradientTransformation, trainable_keys: tuple[str, ...],
                    critic_optimizer: optax.GradientTransformation | None = None) -> UpdateFn:
  """The pure update function (jit it with donated state and the state's shardings)."""
  stages = make_ppo_stages(model_config, lora, config, optimizer, trainable_keys, critic_optimizer)
  placement = config.reward.placement
  normalize = config.reward.normalize == "running"
  warmup_updates = config.ppo.critic_warmup_updates

  def update(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
    attention, action = batch["attention_mask"], batch["action_mask"]
    real_rows = rows_in_batch(attention)
    placed = place_step_rewards(batch["step_rewards"], batch["step_ids"], placement, num_steps=batch["num_steps"])
    reward_stats, extra = state.reward_stats, {}
    if normalize:  # step rewards over the running std of the returns seen so far (this batch included)
      reward_stats = update_moments(state.reward_stats, _row_returns(placed), jnp.any(attention > 0, axis=-1))
      scale = 1.0 / running_std(reward_stats)
      batch = {**batch, "step_rewards": batch["step_rewards"] * scale}
      extra = {"reward/normalizer_std": 1.0 / scale, "reward/normalized_score": jnp.sum(placed) * scale
               / jnp.maximum(real_rows, 1.0)}
    stats = stages.rollout_statistics(state, batch)
    estimate = stages.advantages(state, batch, stats)
    optimized = stages.optimize(state, batch, stats, estimate, rng)
    trainable, per_step = optimized.trainable, dict(optimized.per_step)
    frozen = split_trainable(state.policy, trainable_keys)[1]

    row_kl = jnp.sum(jnp.where(action > 0, stats.kl, 0), axis=-1)
    sequence_kl = jnp.sum(row_kl) / jnp.maximum(real_rows, 1.0)
    new_kl = update_kl_controller(state.kl, sequence_kl, real_rows)
    if warmup_updates:  # the KL coefficient waits for the policy to move
      new_kl = jax.tree.map(lambda new, old: jnp.where(state.step < warmup_updates, old, new), new_kl, state.kl)
    new_state = state.replace(step=state.step + 1, policy={**frozen, **trainable}, opt_state=optimized.opt_state,
                              kl=new_kl, critic=optimized.critic, critic_opt_state=optimized.critic_opt_state,
                              reward_stats=reward_stats)

    # Token-weighted means (optimizer steps weighted by their action tokens).
    weights = per_step.pop("tokens")
    skipped_steps = per_step.pop("optimizer_step_skipped")
    metrics = {k: _weighted_mean(v, weights) for k, v in per_step.items()}
    metrics["optimizer_step_skipped"] = jnp.mean(skipped_steps)
    metrics["policy_loss_first_epoch"] = _weighted_mean(per_step["policy_loss"][0], weights[0])
    metrics["policy_loss_last_epoch"] = _weighted_mean(per_step["policy_loss"][-1], weights[-1])
    advantages, returns = estimate.advantages, estimate.returns
    metrics.update({
        "kl": sequence_kl,
        "kl_coef": state.kl.value,
        "reward/score": jnp.sum(placed) / jnp.maximum(real_rows, 1.0),
        "reward/per_step": reward_per_step(batch["step_rewards"], batch["num_steps"]),
        "advantages/mean": masked_mean(advantages, action),
        "advantages/std": jnp.sqrt(masked_var(advantages, action)),
        "returns/mean": masked_mean(returns, action),
        "values/mean": masked_mean(stats.old_values, action),
        "values/explained_variance": explained_variance(stats.old_values, returns, action),
        "rows": real_rows,
        "tokens": jnp.sum(attention).astype(jnp.float32),
        "action_tokens": jnp.sum(action).astype(jnp.float32),
        **extra,
    })
    if warmup_updates:
      metrics["critic/warmup"] = (state.step < warmup_updates).astype(jnp.float32)
    metrics["nonfinite"] = nonfinite_flag((trainable, optimized.critic), metrics["loss"], metrics["grad_norm"])
    return new_state, metrics

  return update
