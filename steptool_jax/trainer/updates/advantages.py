"""Advantage estimators: what the PPO update asks to turn a batch's rewards into advantages.

    estimator = make_estimator(config)                        # by config.ppo.advantage_estimator
    estimate = estimator.estimate(batch, stats, kl_coef)      # advantages, returns, loss inputs
    extra = estimator.loss_terms(micro_batch, kl_coef)        # extra ppo_loss arguments

* `gae`: token rewards (each step's reward placed on its last action token by
  `reward.placement`, minus `kl_coef * KL` on action tokens), GAE over them with the value
  head's values (`ppo.gae_mode` step or token), optionally whitened over the batch.
* `group` (critic-free): group-normalised step returns-to-go of the placed step rewards over
  the rollouts of one task (`rl.group_advantages`); no value target. The KL is then not in
  the rewards but a term of the loss, so this estimator hands the loss the reference
  log-probs and the coefficient.

The update never tests which estimator runs: it gathers `estimate.loss_inputs` into its
micro-batches like every other per-token array and passes `loss_terms(...)` to the loss.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from steptool_jax.config.run import PPOSection, RewardSection, RunConfig
from steptool_jax.rewards.placement import place_step_rewards, token_rewards, weighted_step_rewards
from steptool_jax.rl.gae import compute_gae
from steptool_jax.rl.group_advantages import critic_free_advantages
from steptool_jax.rl.masked import masked_whiten

Batch = Mapping[str, jax.Array]


class RolloutStats(NamedTuple):
  """What the policy and the reference said about the batch before the update (`[B, T]` each)."""

  old_logp: jax.Array
  old_values: jax.Array
  ref_logp: jax.Array
  kl: jax.Array  # per-token KL penalty of old_logp against ref_logp (reward.kl_penalty)


class Estimate(NamedTuple):
  """`rewards` (token rewards, for the logs), `advantages` (raw) and `returns` (value targets),
  `used_advantages` (what the loss sees), `loss_inputs` (extra per-token arrays for the loss)."""

  rewards: jax.Array
  advantages: jax.Array
  returns: jax.Array
  used_advantages: jax.Array
  loss_inputs: dict[str, jax.Array]


class AdvantageEstimator(Protocol):
  def estimate(self, batch: Batch, stats: RolloutStats, kl_coef: jax.Array) -> Estimate:
    ...

  def loss_terms(self, micro: Mapping[str, jax.Array], kl_coef: jax.Array) -> dict[str, jax.Array]:
    ...


@dataclasses.dataclass(frozen=True)
class GAE:
  """Value-head advantages over the KL-penalised token rewards."""

  ppo: PPOSection
  reward: RewardSection

  def estimate(self, batch: Batch, stats: RolloutStats, kl_coef: jax.Array) -> Estimate:
    action = batch["action_mask"]
    rewards = token_rewards(batch["step_rewards"], batch["step_ids"], action, stats.kl, kl_coef=kl_coef,
                            weighting=self.reward.placement, num_steps=batch["num_steps"])
    raw, returns = compute_gae(rewards, stats.old_values, action, gamma=self.ppo.gamma, lam=self.ppo.lam,
                               mode=self.ppo.gae_mode)
    used = masked_whiten(raw, action) if self.ppo.whiten_advantages else raw
    return Estimate(rewards=rewards, advantages=raw, returns=returns, used_advantages=used, loss_inputs={})

  def loss_terms(self, micro: Mapping[str, jax.Array], kl_coef: jax.Array) -> dict[str, jax.Array]:
    del micro, kl_coef  # the KL is in the rewards
    return {}


@dataclasses.dataclass(frozen=True)
class Group:
  """Critic-free: group-normalised step returns-to-go; the KL is a loss term."""

  ppo: PPOSection
  reward: RewardSection

  def estimate(self, batch: Batch, stats: RolloutStats, kl_coef: jax.Array) -> Estimate:
    del kl_coef  # it weighs the loss term instead
    placement = self.reward.placement
    rewards = place_step_rewards(batch["step_rewards"], batch["step_ids"], placement, num_steps=batch["num_steps"])
    step_rewards = weighted_step_rewards(batch["step_rewards"], batch["num_steps"], placement)
    raw = critic_free_advantages(step_rewards, batch["step_ids"], batch["num_steps"], batch["group_ids"],
                                 scope=self.ppo.group_scope)
    # Already normalised within each group; no value head learns returns (vf_coef = 0).
    return Estimate(rewards=rewards, advantages=raw, returns=jnp.zeros_like(raw), used_advantages=raw,
                    loss_inputs={"ref_logp": stats.ref_logp})

  def loss_terms(self, micro: Mapping[str, jax.Array], kl_coef: jax.Array) -> dict[str, jax.Array]:
    return {"ref_logp": micro["ref_logp"], "kl_loss_coef": kl_coef}


ESTIMATORS = {"gae": GAE, "group": Group}


def make_estimator(config: RunConfig) -> AdvantageEstimator:
  return ESTIMATORS[config.ppo.advantage_estimator](config.ppo, config.reward)
