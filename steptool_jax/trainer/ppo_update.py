"""One PPO iteration on a step-grained batch, as one pure function to jit.

    update(state, batch, rng) -> (state, metrics)

1. Rollout statistics with the current policy, in minibatch-sized chunks: old log-probs and
   values (one forward), reference log-probs (a second forward: LoRA switched off, or the
   frozen reference copy when training without LoRA).
2. Token rewards: step rewards placed on the last action token of each step (granularity
   and weighting from the config) minus `kl_coef * KL` on action tokens; GAE (step or token
   mode); optional whitening of the advantages over the batch's action tokens.
3. `epochs` passes over the batch, each a fresh random split into optimizer steps of
   `grad_accum_steps` micro-batches of `minibatch_size` rows. Gradients are summed over the
   micro-batches with a `lax.scan` and averaged over those the ratio guard kept (a
   micro-batch without action tokens is never kept); an optimizer step whose every
   micro-batch was skipped leaves the trainable variables and the optimizer state exactly
   as they were. Reported statistics are token-weighted over the micro-batches.
4. The KL controller sees the batch's mean sequence KL (over real rows, not padding rows).

Critic-free (`ppo.advantage_estimator = "group"`, online rollouts with several per task):
step 2 becomes group-normalised step returns-to-go (`rl.group_advantages`) of the
granularity's step rewards, with no value target, and the KL coefficient weighs a KL term
of the loss (`rl.ppo.ppo_loss(ref_logp=...)`) instead of the token rewards.

The three stages are separate functions (`make_ppo_stages`) so that the benchmark can
time them apart; `make_ppo_update` composes them and adds the KL controller and metrics.
Every per-token statistic is a masked mean, so the empty rows that pad a short last batch
contribute nothing and cannot make a NaN. The math lives in `steptool_jax.rl` and
`steptool_jax.rewards.placement`; this module only wires it (docs/rl.md, section 6).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from steptool_jax.models.config import LoraConfig, ModelConfig
from steptool_jax.models.llama import CausalLM
from steptool_jax.models.policy import score_tokens
from steptool_jax.models.value_head import ValueHead
from steptool_jax.rewards.placement import place_step_rewards, token_rewards, weighted_step_rewards
from steptool_jax.rl.group_advantages import critic_free_advantages
from steptool_jax.rl.gae import compute_gae
from steptool_jax.rl.kl import kl_penalty
from steptool_jax.rl.kl_controller import update_kl_controller
from steptool_jax.rl.masked import explained_variance, masked_mean, masked_var, masked_whiten
from steptool_jax.rl.ppo import ppo_loss
from steptool_jax.trainer.state import TrainState, split_trainable
from steptool_jax.trainer.update_utils import all_finite, constrain_rows, rows_in_batch, strided_merge, strided_split

Batch = Mapping[str, jax.Array]
UpdateFn = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict[str, jax.Array]]]

# config.reward.granularity -> the placement weighting of steptool_jax.rewards.placement.
_GRANULARITY_WEIGHTING = {"final": "final_only", "summed": "summed"}


@dataclasses.dataclass(frozen=True)
class PPOSettings:
  """The static numbers of the update (hashable, so the jitted function can be cached)."""

  epochs: int = 4
  minibatch_size: int = 2
  grad_accum_steps: int = 4
  gamma: float = 0.99
  lam: float = 0.95
  gae_mode: str = "step"
  whiten_advantages: bool = True
  clip_eps: float = 0.2
  value_clip: float = 0.2
  vf_coef: float = 0.1
  entropy_coef: float = 0.0
  ratio_threshold: float = 10.0
  weighting: str = "paper"  # placement weighting (paper | original_code | final_only | summed)
  kl_penalty: str = "kl"
  logits_chunk: int = 512
  value_head_dropout: float = 0.0
  advantage_estimator: str = "gae"  # gae | group (critic-free; needs group_ids in the batch)
  group_scope: str = "group"

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> PPOSettings:
    ppo, reward = config.ppo, config.reward
    return cls(
        epochs=ppo.epochs, minibatch_size=config.batch.minibatch_size,
        grad_accum_steps=config.batch.grad_accum_steps, gamma=ppo.gamma, lam=ppo.lam, gae_mode=ppo.gae_mode,
        whiten_advantages=ppo.whiten_advantages, clip_eps=ppo.clip_eps, value_clip=ppo.value_clip,
        vf_coef=ppo.vf_coef, entropy_coef=ppo.entropy_coef, ratio_threshold=ppo.ratio_threshold,
        weighting=_GRANULARITY_WEIGHTING.get(reward.granularity, reward.weighting), kl_penalty=reward.kl_penalty,
        logits_chunk=config.model.logits_chunk, value_head_dropout=config.model.value_head_dropout,
        advantage_estimator=ppo.advantage_estimator, group_scope=ppo.group_scope)


def _weighted_mean(x: jax.Array, weights: jax.Array) -> jax.Array:
  """Mean of `x` weighted by `weights` (same shape); 0 when every weight is 0."""
  return jnp.sum(x * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def micro_batch_rows(rng: jax.Array, num_rows: int, minibatch_size: int, grad_accum_steps: int) -> jax.Array:
  """`[optimizer steps, grad_accum_steps, minibatch_size]` row indices: a random split of the batch."""
  return jax.random.permutation(rng, num_rows).reshape(-1, grad_accum_steps, minibatch_size)


def _in_chunks(fn: Callable[..., Any], minibatch_size: int, *arrays: jax.Array) -> Any:
  """`fn` over chunks of `minibatch_size` rows (one at a time), results back in row order."""
  parts = arrays[0].shape[0] // minibatch_size
  return jax.tree.map(strided_merge, jax.lax.map(lambda xs: fn(*xs), tuple(strided_split(x, parts) for x in arrays)))


def reward_per_step(step_rewards: jax.Array, num_steps: jax.Array) -> jax.Array:
  """`[S]`: mean reward of step position s over the rows that have an s-th step."""
  present = jnp.arange(step_rewards.shape[-1]) < num_steps[:, None]
  return jnp.sum(jnp.where(present, step_rewards, 0), axis=0) / jnp.maximum(jnp.sum(present, axis=0), 1)


class PPOStages(NamedTuple):
  """The three stages of an update, each a pure function (the benchmark times them apart).

  rollout_statistics(state, input_ids, attention_mask) -> (old_logp, old_values, ref_logp)
  advantages(state, batch, old_logp, old_values, ref_logp) -> dict: kl, rewards, advantages, returns, used_advantages
  optimize(state, batch, old_logp, old_values, used_advantages, returns, rng, ref_logp) -> (trainable, opt_state, per_step)
  """

  rollout_statistics: Callable[..., tuple[jax.Array, jax.Array, jax.Array]]
  advantages: Callable[..., dict[str, jax.Array]]
  optimize: Callable[..., tuple[Any, Any, dict[str, jax.Array]]]


def make_ppo_stages(model_config: ModelConfig, lora: LoraConfig | None, settings: PPOSettings,
                    optimizer: optax.GradientTransformation, trainable_keys: tuple[str, ...]) -> PPOStages:
  stats_model = CausalLM(model_config, lora, deterministic=True)
  dropout = (lora is not None and lora.dropout > 0) or settings.value_head_dropout > 0
  train_model = CausalLM(model_config, lora, deterministic=not dropout)
  train_head = ValueHead(settings.value_head_dropout, deterministic=not dropout)
  with_entropy = settings.entropy_coef > 0
  s = settings

  def rollout_statistics(state: TrainState, ids: jax.Array, attention: jax.Array):
    """Old log-probs and values (one forward), reference log-probs (a second), chunk by chunk."""
    def chunk(ids, attention):
      policy = score_tokens(stats_model, state.policy, ids, attention, use_lora=True, with_values=True,
                            chunk_size=s.logits_chunk)
      if state.reference is None:  # LoRA: the reference is the base model, adapters off
        reference = score_tokens(stats_model, state.policy, ids, attention, use_lora=False, with_values=False,
                                 chunk_size=s.logits_chunk)
      else:
        reference = score_tokens(stats_model, {"params": state.reference}, ids, attention, use_lora=False,
                                 with_values=False, chunk_size=s.logits_chunk)
      return policy.logp, policy.values, reference.logp
    return _in_chunks(chunk, s.minibatch_size, ids, attention)

  def advantages(state: TrainState, batch: Batch, old_logp: jax.Array, old_values: jax.Array,
                 ref_logp: jax.Array) -> dict[str, jax.Array]:
    """Token rewards (placed step rewards minus the KL term), GAE, optional whitening; or,
    critic-free, group-normalised step returns-to-go (the KL then goes into the loss)."""
    action = batch["action_mask"]
    kl = kl_penalty(old_logp, ref_logp, s.kl_penalty)
    if s.advantage_estimator == "group":
      rewards = place_step_rewards(batch["step_rewards"], batch["step_ids"], s.weighting, num_steps=batch["num_steps"])
      step_rewards = weighted_step_rewards(batch["step_rewards"], batch["num_steps"], s.weighting)
      raw = critic_free_advantages(step_rewards, batch["step_ids"], batch["num_steps"], batch["group_ids"],
                                   scope=s.group_scope)
      # Already normalised within each group; no value head learns returns (vf_coef = 0).
      return {"kl": kl, "rewards": rewards, "advantages": raw, "returns": jnp.zeros_like(raw),
              "used_advantages": raw}
    rewards = token_rewards(batch["step_rewards"], batch["step_ids"], action, kl, kl_coef=state.kl.value,
                            weighting=s.weighting, num_steps=batch["num_steps"])
    raw, returns = compute_gae(rewards, old_values, action, gamma=s.gamma, lam=s.lam, mode=s.gae_mode)
    used = masked_whiten(raw, action) if s.whiten_advantages else raw
    return {"kl": kl, "rewards": rewards, "advantages": raw, "returns": returns, "used_advantages": used}

  critic_free = s.advantage_estimator == "group"

  def loss_fn(trainable, frozen, micro: Mapping[str, jax.Array], rng: jax.Array, kl_coef: jax.Array):
    micro = {k: constrain_rows(v) for k, v in micro.items()}
    scores = score_tokens(train_model, {**frozen, **trainable}, micro["input_ids"], micro["attention_mask"],
                          use_lora=True, with_entropy=with_entropy, with_values=True, value_head=train_head,
                          rngs={"dropout": rng} if dropout else None, chunk_size=s.logits_chunk)
    # Critic-free training has no reward tensor to carry the KL penalty: it is a loss term.
    kl_loss = dict(ref_logp=micro["ref_logp"], kl_loss_coef=kl_coef, kl_loss_kind=s.kl_penalty) if critic_free else {}
    return ppo_loss(scores.logp, micro["old_logp"], scores.values, micro["old_values"], micro["advantages"],
                    micro["returns"], micro["action_mask"], clip_eps=s.clip_eps, value_clip=s.value_clip,
                    vf_coef=s.vf_coef, entropy=scores.entropy, entropy_coef=s.entropy_coef,
                    ratio_threshold=s.ratio_threshold, **kl_loss)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def optimizer_step(carry, xs, *, per_token, frozen, kl_coef):
    """One optimizer step: gradients accumulated over `grad_accum_steps` micro-batches."""
    trainable, opt_state = carry
    step_rows, rngs = xs
    micro_batches = {k: jnp.take(v, step_rows, axis=0) for k, v in per_token.items()}  # [accum, mb, ...]

    def accumulate(acc, micro_xs):
      grads_sum, kept = acc
      micro, rng = micro_xs
      (_, metrics), grads = grad_fn(trainable, frozen, micro, rng, kl_coef)
      # A micro-batch of padding rows only (a short last batch) has nothing to learn from:
      # it counts neither in the gradient average nor in the statistics.
      tokens = jnp.sum(micro["action_mask"] > 0).astype(jnp.float32)
      keep = (tokens > 0) & (metrics["skipped"] == 0)
      # where, not a product: a skipped micro-batch may hold non-finite gradients.
      grads_sum = jax.tree.map(lambda a, g: a + jnp.where(keep, g, 0).astype(a.dtype), grads_sum, grads)
      return (grads_sum, kept + keep.astype(jnp.float32)), {**metrics, "tokens": tokens}

    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), trainable)
    (grads_sum, kept), metrics = jax.lax.scan(accumulate, (zeros, jnp.zeros((), jnp.float32)), (micro_batches, rngs))
    grads = jax.tree.map(lambda g: g / jnp.maximum(kept, 1.0), grads_sum)
    updates, new_opt_state = optimizer.update(grads, opt_state, trainable)
    new_trainable = optax.apply_updates(trainable, updates)
    moved = kept > 0
    trainable, opt_state = jax.tree.map(lambda new, old: jnp.where(moved, new, old),
                                        (new_trainable, new_opt_state), (trainable, opt_state))
    # Statistics are token-weighted over the micro-batches: an epoch's value is then the mean
    # over all its action tokens, comparable from one epoch (one random split) to the next.
    tokens = metrics.pop("tokens")
    metrics = {k: _weighted_mean(v, tokens) for k, v in metrics.items()}
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["tokens"] = jnp.sum(tokens)
    # Skipped by the ratio guard (not merely empty): it had action tokens, nothing was kept.
    metrics["optimizer_step_skipped"] = ((jnp.sum(tokens) > 0) & ~moved).astype(jnp.float32)
    return (trainable, opt_state), metrics

  def optimize(state: TrainState, batch: Batch, old_logp: jax.Array, old_values: jax.Array,
               used_advantages: jax.Array, returns: jax.Array, rng: jax.Array, ref_logp: jax.Array | None = None):
    """`epochs` passes, each a fresh random split of the batch; all epochs' optimizer steps
    run in one scan, each gathering its micro-batches by row index."""
    num_rows = batch["input_ids"].shape[0]
    per_token = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                 "action_mask": batch["action_mask"], "old_logp": old_logp, "old_values": old_values,
                 "advantages": used_advantages, "returns": returns}
    if critic_free:
      per_token["ref_logp"] = ref_logp
    shuffle_rng, dropout_rng = jax.random.split(rng)
    rows = jax.vmap(lambda key: micro_batch_rows(key, num_rows, s.minibatch_size, s.grad_accum_steps))(
        jax.random.split(shuffle_rng, s.epochs))
    steps_per_epoch = rows.shape[1]
    rows = rows.reshape((-1,) + rows.shape[2:])  # [epochs x steps, accumulation, minibatch]
    dropout_rngs = jax.random.split(dropout_rng, rows.shape[0] * s.grad_accum_steps).reshape(rows.shape[:2])
    trainable, frozen = split_trainable(state.policy, trainable_keys)
    step_fn = functools.partial(optimizer_step, per_token=per_token, frozen=frozen, kl_coef=state.kl.value)
    (trainable, opt_state), per_step = jax.lax.scan(step_fn, (trainable, state.opt_state), (rows, dropout_rngs))
    return trainable, opt_state, jax.tree.map(lambda x: x.reshape(s.epochs, steps_per_epoch), per_step)

  return PPOStages(rollout_statistics, advantages, optimize)


def make_ppo_update(model_config: ModelConfig, lora: LoraConfig | None, settings: PPOSettings,
                    optimizer: optax.GradientTransformation, trainable_keys: tuple[str, ...]) -> UpdateFn:
  """The pure update function (jit it with donated state and the state's shardings)."""
  stages = make_ppo_stages(model_config, lora, settings, optimizer, trainable_keys)
  s = settings

  def update(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
    attention, action = batch["attention_mask"], batch["action_mask"]
    old_logp, old_values, ref_logp = stages.rollout_statistics(state, batch["input_ids"], attention)
    adv = stages.advantages(state, batch, old_logp, old_values, ref_logp)
    trainable, opt_state, per_step = stages.optimize(state, batch, old_logp, old_values, adv["used_advantages"],
                                                     adv["returns"], rng, ref_logp)
    kl, advantages, returns = adv["kl"], adv["advantages"], adv["returns"]
    frozen = split_trainable(state.policy, trainable_keys)[1]

    real_rows = rows_in_batch(attention)
    row_kl = jnp.sum(jnp.where(action > 0, kl, 0), axis=-1)
    sequence_kl = jnp.sum(row_kl) / jnp.maximum(real_rows, 1.0)
    new_kl = update_kl_controller(state.kl, sequence_kl, real_rows)
    new_state = state.replace(step=state.step + 1, policy={**frozen, **trainable}, opt_state=opt_state, kl=new_kl)

    # Token-weighted means (optimizer steps weighted by their action tokens).
    weights = per_step.pop("tokens")
    skipped_steps = per_step.pop("optimizer_step_skipped")
    metrics = {k: _weighted_mean(v, weights) for k, v in per_step.items()}
    metrics["optimizer_step_skipped"] = jnp.mean(skipped_steps)
    metrics["policy_loss_first_epoch"] = _weighted_mean(per_step["policy_loss"][0], weights[0])
    metrics["policy_loss_last_epoch"] = _weighted_mean(per_step["policy_loss"][-1], weights[-1])
    placed = place_step_rewards(batch["step_rewards"], batch["step_ids"], s.weighting, num_steps=batch["num_steps"])
    metrics.update({
        "kl": sequence_kl,
        "kl_coef": state.kl.value,
        "reward/score": jnp.sum(placed) / jnp.maximum(real_rows, 1.0),
        "reward/per_step": reward_per_step(batch["step_rewards"], batch["num_steps"]),
        "advantages/mean": masked_mean(advantages, action),
        "advantages/std": jnp.sqrt(masked_var(advantages, action)),
        "returns/mean": masked_mean(returns, action),
        "values/mean": masked_mean(old_values, action),
        "values/explained_variance": explained_variance(old_values, returns, action),
        "rows": real_rows,
        "tokens": jnp.sum(attention).astype(jnp.float32),
        "action_tokens": jnp.sum(action).astype(jnp.float32),
    })
    metrics["nonfinite"] = 1.0 - (all_finite(trainable) & jnp.isfinite(metrics["loss"])
                                  & jnp.isfinite(metrics["grad_norm"])).astype(jnp.float32)
    return new_state, metrics

  return update
