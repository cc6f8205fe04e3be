"""The stability options of the PPO update, each against what it must (and must not) change:
a separate critic (`ppo.critic`), the critic's warm-up (`ppo.critic_warmup_updates`), running
reward normalisation (`reward.normalize`), and behaviour log-probs (`ppo.old_logp`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from steptool_jax.config import schema
from steptool_jax.models.lora import LORA_COLLECTION
from steptool_jax.models.policy import init_lora_params, init_value_head_params
from tests.models.tiny_models import LORA, TINY, lora_policy, tiny_policy
from tests.trainer.fixtures import compile_cache  # noqa: F401 (fixture)
from tests.trainer.ppo_setup import SETTINGS, jitted_update, make_batch, sgd, single_device_mesh

pytestmark = pytest.mark.usefixtures("compile_cache")

FULL_KEYS, LORA_KEYS = ("params",), (LORA_COLLECTION,)  # a separate critic trains the value head


def full_critic(policy):
  """Without LoRA the critic starts as a copy of the policy and its value head."""
  return {"params": policy.variables["params"], "value_head": policy.variables["value_head"]}


def lora_critic():
  """Under LoRA: adapters of its own (B = 0) and a fresh head over the policy's frozen base."""
  return {LORA_COLLECTION: init_lora_params(TINY, LORA, jax.random.key(11)), "value_head": init_value_head_params(TINY)}


def separate(**changes):
  return schema.replace(SETTINGS, ppo__critic="separate", **changes)


def arrays(tree):
  return jax.tree.map(np.asarray, tree)


# Under LoRA only (the critic's own adapters over the frozen base, the harder layout); a full
# critic is the copy of test_a_critic_copied_from_the_policy_gives_the_shared_update_without_value_loss.
@pytest.mark.parametrize("use_lora", [True])
def test_a_separate_critic_never_moves_the_policy_through_the_value_loss(use_lora):
  policy = lora_policy() if use_lora else tiny_policy()
  critic, keys = (lora_critic(), LORA_KEYS) if use_lora else (full_critic(policy), FULL_KEYS)
  batch, rng = make_batch(), jax.random.key(3)
  out = {}
  for vf_coef in (0.0, 1.0):
    step, state = jitted_update(single_device_mesh(), policy, tx=sgd(), keys=keys, lora=LORA if use_lora else None,
                                settings=separate(ppo__vf_coef=vf_coef), keep_reference=not use_lora,
                                critic=critic, critic_tx=sgd())
    start = arrays(state.critic)
    new_state, metrics = step(state, batch, rng)
    out[vf_coef] = (arrays({k: new_state.policy[k] for k in keys}), arrays(new_state.critic), start, metrics)
  (policy0, critic0, start0, m0), (policy1, critic1, start1, m1) = out[0.0], out[1.0]
  jax.tree.map(np.testing.assert_array_equal, policy1, policy0)  # bit for bit
  assert m0["policy_loss"] == m1["policy_loss"]  # (the value loss differs: the critic moved between epochs)
  jax.tree.map(np.testing.assert_array_equal, critic0, start0)  # vf_coef 0: no gradient reaches the critic
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), critic1, start1))
  assert max(moved) > 1e-6 and m1["critic/grad_norm"] > 0  # vf_coef 1: the critic learns
  changed = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(),
                                         policy0, arrays({k: policy.variables[k] for k in keys})))
  assert max(changed) > 1e-6  # the policy did learn, from the policy loss


def test_a_critic_copied_from_the_policy_gives_the_shared_update_without_value_loss():
  """The policy's gradient is the policy loss's whether its values come from the shared head or
  from a separate copy of the same weights: the separate critic's policy update equals the
  shared critic's with vf_coef 0 (float tolerance: two different programs)."""
  policy, batch, rng = tiny_policy(), make_batch(), jax.random.key(4)
  step, state = jitted_update(single_device_mesh(), policy, tx=sgd(), keys=FULL_KEYS, settings=separate(),
                              critic=full_critic(policy), critic_tx=sgd())
  got, _ = step(state, batch, rng)
  step, state = jitted_update(single_device_mesh(), policy, tx=sgd(), keys=("params", "value_head"),
                              settings=schema.replace(SETTINGS, ppo__vf_coef=0.0))
  want, _ = step(state, batch, rng)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-6), arrays(got.policy["params"]),
               arrays(want.policy["params"]))


@pytest.mark.parametrize("critic", ["separate", "shared"])
def test_warm_up_keeps_the_policy_and_the_kl_coefficient_bit_identical(critic):
  warmup = 2
  policy, batch = tiny_policy(), make_batch()
  if critic == "separate":
    step, state = jitted_update(single_device_mesh(), policy, tx=sgd(), keys=FULL_KEYS, critic=full_critic(policy),
                                critic_tx=sgd(), settings=separate(ppo__critic_warmup_updates=warmup))
    frozen, learning = lambda s: s.policy["params"], lambda s: s.critic
  else:
    step, state = jitted_update(single_device_mesh(), policy, tx=sgd(), keys=("params", "value_head"),
                                settings=schema.replace(SETTINGS, ppo__critic_warmup_updates=warmup))
    frozen, learning = lambda s: s.policy["params"], lambda s: s.policy["value_head"]
  start_policy, start_critic, start_kl = arrays(frozen(state)), arrays(learning(state)), float(state.kl.value)
  for update in range(1, warmup + 2):
    state, metrics = step(state, batch, jax.random.key(update))
    moved_policy = max(jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), arrays(frozen(state)),
                                                     start_policy)))
    moved_critic = max(jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), arrays(learning(state)),
                                                     start_critic)))
    assert moved_critic > 0, update
    if update <= warmup:
      assert moved_policy == 0 and float(state.kl.value) == start_kl and metrics["critic/warmup"] == 1, update
    else:
      assert moved_policy > 0 and float(state.kl.value) != start_kl and metrics["critic/warmup"] == 0


def test_running_normalisation_divides_step_rewards_by_the_std_of_every_return_so_far():
  policy = tiny_policy()
  step, state = jitted_update(single_device_mesh(), policy, tx=sgd(), keys=("params", "value_head"),
                              settings=schema.replace(SETTINGS, reward__normalize="running"))
  seen = []
  for k, scale in enumerate((1.0, 3.0, 10.0)):
    batch = make_batch()
    batch["step_rewards"] = batch["step_rewards"] * scale
    # By hand: each row's return is the sum of its real steps' rewards (every step keeps its tokens here).
    seen += [float(batch["step_rewards"][b, :batch["num_steps"][b]].sum()) for b in range(8)]
    state, metrics = step(state, batch, jax.random.key(k))
    want = np.std(np.asarray(seen, np.float64))
    np.testing.assert_allclose(metrics["reward/normalizer_std"], want, rtol=1e-5)
    np.testing.assert_allclose(float(state.reward_stats.count), len(seen))
    np.testing.assert_allclose(np.sqrt(float(state.reward_stats.m2) / len(seen)), want, rtol=1e-5)
    np.testing.assert_allclose(metrics["reward/normalized_score"] * want, metrics["reward/score"], rtol=1e-5)


def test_normalised_rewards_give_the_advantages_of_rewards_divided_by_hand():
  """One update with normalisation equals one without on step rewards divided by the batch's
  own std (the first batch: the running std is that batch's)."""
  policy, batch, rng = tiny_policy(), make_batch(), jax.random.key(2)
  step, state = jitted_update(single_device_mesh(), policy, tx=sgd(), keys=("params", "value_head"),
                              settings=schema.replace(SETTINGS, reward__normalize="running"))
  got, got_metrics = step(state, batch, rng)
  returns = [batch["step_rewards"][b, :batch["num_steps"][b]].sum() for b in range(8)]
  divided = {**batch, "step_rewards": (batch["step_rewards"] / np.std(np.asarray(returns, np.float64))
                                       ).astype(np.float32)}
  step, state = jitted_update(single_device_mesh(), policy, tx=sgd(), keys=("params", "value_head"))
  want, want_metrics = step(state, divided, rng)
  np.testing.assert_allclose(got_metrics["advantages/mean"], want_metrics["advantages/mean"], rtol=1e-4, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-6), arrays(got.policy["params"]),
               arrays(want.policy["params"]))


def test_behaviour_log_probs_equal_the_recomputed_ones_on_an_on_policy_batch():
  """Rows played by the policy itself: the rollout's log-probs (`ppo.old_logp = behaviour`)
  and the update's recomputation agree to float tolerance on every action token."""
  from steptool_jax.config.run import parse_run_config  # noqa: PLC0415
  from steptool_jax.trainer.sources.online import make_online_source  # noqa: PLC0415
  from steptool_jax.trainer.updates.ppo import make_ppo_stages  # noqa: PLC0415
  from tests.rollout.tiny_policy import builtin_tokenizer, tiny_policy as rollout_policy  # noqa: PLC0415
  from tests.trainer.sources.test_online import BATCH, online_config  # noqa: PLC0415

  behaviour = parse_run_config(online_config(**{"ppo.old_logp": "behaviour"}))
  recompute = parse_run_config(online_config())
  acting = rollout_policy()
  source = make_online_source(behaviour, builtin_tokenizer(), acting, local_rows=slice(0, BATCH))
  batch, _ = source.batch(0, 1, acting.variables)
  assert "behaviour_logp" in batch and np.any(batch["behaviour_logp"] != 0)
  state = type("State", (), {"policy": acting.variables, "reference": None, "critic": None})()
  stats = {}
  for name, config in (("behaviour", behaviour), ("recompute", recompute)):
    stages = make_ppo_stages(acting.config, None, config, sgd(), ("params", "value_head"))
    stats[name] = jax.jit(lambda arrays, stages=stages: stages.rollout_statistics(state, arrays))(
        {k: jnp.asarray(v) for k, v in batch.items()})
  action = batch["action_mask"] > 0
  np.testing.assert_allclose(np.asarray(stats["behaviour"].old_logp)[action],
                             np.asarray(stats["recompute"].old_logp)[action], atol=1e-4)
  np.testing.assert_allclose(stats["behaviour"].old_values, stats["recompute"].old_values, atol=1e-5)
