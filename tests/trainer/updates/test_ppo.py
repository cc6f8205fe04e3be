"""One PPO update against a step-by-step recomputation outside the jitted loop.

The recomputation uses only the model's layers (`CausalLM`, tested against Hugging Face
elsewhere) with log-probs and values taken from full logits and aligned by hand, plain
Python loops for reward placement and step-mode GAE, numpy for whitening, a hand-written
clipped loss with `jax.grad`, and SGD written out. The batch
(`ppo_setup`) makes each of the two PPO epochs one optimizer step on the whole-batch
loss, so the second epoch (ratios no longer 1, clipping active) is checked too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from steptool_jax.config import schema
from steptool_jax.models import CausalLM
from tests.models.tiny_models import LORA, TINY, lora_policy, tiny_policy
from tests.trainer.fixtures import compile_cache  # noqa: F401 (fixture)
from tests.trainer.ppo_setup import (CLIP, GAMMA, KL_COEF, LAM, LR, REFERENCE_SHIFT, SETTINGS, VALUE_CLIP, VF_COEF,
                                     jitted_update, make_batch, sgd, single_device_mesh)

pytestmark = pytest.mark.usefixtures("compile_cache")

KEYS = ("params", "value_head")


def placed_rewards_loop(step_rewards, step_ids):
  out = np.zeros(step_ids.shape, np.float64)
  for b in range(step_ids.shape[0]):
    for s in range(step_rewards.shape[1]):
      positions = np.flatnonzero(step_ids[b] == s)
      if len(positions):
        out[b, positions.max()] += step_rewards[b, s]
  return out


def step_gae_loop(rewards, values, mask):
  """Step mode: the recursion runs over a row's action tokens only."""
  advantages = np.zeros(rewards.shape, np.float64)
  for b in range(rewards.shape[0]):
    next_value, next_advantage = 0.0, 0.0
    for t in reversed(np.flatnonzero(mask[b])):
      delta = rewards[b, t] + GAMMA * next_value - values[b, t]
      next_advantage = delta + GAMMA * LAM * next_advantage
      advantages[b, t] = next_advantage
      next_value = values[b, t]
  return advantages, advantages + values * mask


def whiten(x, mask):
  on = x[mask > 0]
  return np.where(mask > 0, (x - on.mean()) / np.sqrt(on.var(ddof=1) + 1e-8), 0.0)


def hand_scores(variables, batch):
  """Log-probs and values from full logits, aligned by hand: position t holds
  log p(token t | tokens < t) and the value head on the hidden state at t - 1."""
  model = CausalLM(TINY)
  hidden, _ = model.apply({"params": variables["params"]}, batch["input_ids"], batch["attention_mask"],
                          method=CausalLM.hidden_states)
  logits = model.apply({"params": variables["params"]}, hidden, method=CausalLM.logits)
  log_probs = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  taken = jnp.take_along_axis(log_probs, batch["input_ids"][:, 1:, None], axis=-1)[..., 0]
  head = variables["value_head"]
  values = hidden[:, :-1].astype(jnp.float32) @ head["kernel"] + head["bias"]
  pad = lambda x: jnp.pad(x, ((0, 0), (1, 0)))
  return pad(taken), pad(values)


@jax.jit
def hand_loss_and_grad(trainable, batch, old_logp, old_values, advantages, returns):
  """Clipped surrogate + 0.1 x clipped value loss, token means over the whole batch."""
  def loss_fn(trainable):
    logp, values = hand_scores(trainable, batch)
    on = batch["action_mask"] > 0
    ratio = jnp.exp(jnp.where(on, logp - old_logp, 0))
    policy = jnp.maximum(-advantages * ratio, -advantages * jnp.clip(ratio, 1 - CLIP, 1 + CLIP))
    clipped = old_values + jnp.clip(values - old_values, -VALUE_CLIP, VALUE_CLIP)
    value = 0.5 * jnp.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    count = jnp.sum(on)
    policy_loss = jnp.sum(jnp.where(on, policy, 0)) / count
    return policy_loss + VF_COEF * jnp.sum(jnp.where(on, value, 0)) / count, policy_loss
  return jax.value_and_grad(loss_fn, has_aux=True)(trainable)


@pytest.fixture(scope="module")
def full_update():
  return jitted_update(single_device_mesh(), tiny_policy(), tx=sgd(), keys=KEYS)[0]


def fresh_state():
  return jitted_update(single_device_mesh(), tiny_policy(), tx=sgd(), keys=KEYS)[1]


def test_one_update_equals_the_step_by_step_computation(full_update):
  batch = make_batch()
  policy = tiny_policy()
  scores = jax.jit(hand_scores)
  old_logp, old_values = (np.asarray(x, np.float64) for x in scores(policy.variables, batch))
  reference = {"params": jax.tree.map(lambda x: x * REFERENCE_SHIFT, policy.variables["params"]),
               "value_head": policy.variables["value_head"]}
  ref_logp = np.asarray(scores(reference, batch)[0], np.float64)
  mask = batch["action_mask"]
  real = batch["attention_mask"] * np.roll(batch["attention_mask"], 1, axis=1)
  real[:, 0] = 0  # positions with a real predecessor: only there are log-probs defined
  old_logp, old_values, ref_logp = old_logp * real, old_values * real, ref_logp * real

  kl = (old_logp - ref_logp) * mask
  rewards = placed_rewards_loop(batch["step_rewards"], batch["step_ids"]) - KL_COEF * kl
  advantages, returns = step_gae_loop(rewards, old_values, mask)
  args = (batch, jnp.asarray(old_logp, jnp.float32), jnp.asarray(old_values, jnp.float32),
          jnp.asarray(whiten(advantages, mask), jnp.float32), jnp.asarray(returns, jnp.float32))
  trainable = {k: policy.variables[k] for k in KEYS}
  losses, policy_losses = [], []
  for _ in range(SETTINGS.ppo.epochs):  # one SGD step per epoch on the whole-batch loss
    (loss, policy_loss), grads = hand_loss_and_grad(trainable, *args)
    losses.append(float(loss))
    policy_losses.append(float(policy_loss))
    trainable = jax.tree.map(lambda p, g: p - LR * g, trainable, grads)

  new_state, metrics = full_update(fresh_state(), batch, jax.random.key(3))

  for name in KEYS:
    jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-4),
                 new_state.policy[name], trainable[name])
  moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(new_state.policy["params"]),
                                                             jax.tree.leaves(policy.variables["params"])))
  assert moved > 1e-4  # the update did something, so the comparison above means something
  np.testing.assert_allclose(metrics["loss"], np.mean(losses), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(metrics["policy_loss_first_epoch"], policy_losses[0], atol=1e-6)
  np.testing.assert_allclose(metrics["policy_loss_last_epoch"], policy_losses[1], rtol=1e-4, atol=1e-6)
  # The PPO objective moved the right way: epoch 2 sees a lower surrogate than epoch 1.
  assert policy_losses[1] < policy_losses[0] - 1e-3

  rows = len(batch["num_steps"])
  sequence_kl = kl.sum(-1).mean()
  np.testing.assert_allclose(metrics["kl"], sequence_kl, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(metrics["kl_coef"], KL_COEF)
  error = np.clip(sequence_kl / 6.0 - 1, -0.2, 0.2)
  np.testing.assert_allclose(new_state.kl.value, KL_COEF * (1 + error * rows / 10000.0), rtol=1e-6)
  np.testing.assert_allclose(metrics["reward/score"],
                             placed_rewards_loop(batch["step_rewards"], batch["step_ids"]).sum() / rows, rtol=1e-5)
  per_step = [np.mean([batch["step_rewards"][b, s] for b in range(rows) if s < batch["num_steps"][b]])
              for s in range(6)]
  np.testing.assert_allclose(metrics["reward/per_step"], per_step, rtol=1e-5)
  np.testing.assert_allclose(metrics["advantages/mean"], advantages[mask > 0].mean(), rtol=1e-4, atol=1e-6)
  residual, target = (returns - old_values)[mask > 0], returns[mask > 0]
  np.testing.assert_allclose(metrics["values/explained_variance"], 1 - residual.var() / target.var(), rtol=1e-4,
                             atol=1e-5)
  assert metrics["skipped"] == 0 and metrics["optimizer_step_skipped"] == 0 and metrics["nonfinite"] == 0
  assert int(new_state.step) == 1


def test_padding_rows_are_ignored_and_an_empty_batch_changes_nothing(full_update):
  batch = make_batch()
  for key, fill in (("input_ids", 0), ("attention_mask", 0), ("action_mask", 0), ("step_ids", -1),
                    ("step_rewards", 0), ("num_steps", 0)):
    batch[key][4:] = fill  # rows 4-7 are the empty rows collate pads a short batch with
  _, metrics = full_update(fresh_state(), batch, jax.random.key(3))
  assert all(np.isfinite(v).all() for v in jax.tree.leaves(metrics))
  assert metrics["rows"] == 4 and metrics["action_tokens"] == 24

  for key in batch:
    batch[key][:4] = batch[key][4]
  state = fresh_state()
  before = jax.tree.map(np.asarray, state.policy)
  new_state, metrics = full_update(state, batch, jax.random.key(3))
  assert all(np.isfinite(v).all() for v in jax.tree.leaves(metrics)) and metrics["rows"] == 0
  assert metrics["loss"] == 0 and metrics["kl"] == 0
  jax.tree.map(np.testing.assert_array_equal, new_state.policy, before)


def test_lora_update_uses_adapters_off_as_reference_and_skipped_steps_change_nothing():
  """With a ratio threshold below 1 every micro-batch is skipped: parameters and optimizer
  state (AdamW, whose weight decay would move them even with zero gradients) stay bit for
  bit, while the step count and the KL controller move on."""
  policy = lora_policy()
  step, state = jitted_update(single_device_mesh(), policy, tx=optax.adamw(1e-2), keys=("lora", "value_head"),
                              lora=LORA, settings=schema.replace(SETTINGS, ppo__ratio_threshold=1e-3),
                              keep_reference=False)
  batch = make_batch()
  before = jax.tree.map(np.asarray, (state.policy, state.opt_state))

  new_state, metrics = step(state, batch, jax.random.key(5))

  jax.tree.map(np.testing.assert_array_equal, (new_state.policy, new_state.opt_state), before)
  assert metrics["skipped"] == 1 and metrics["optimizer_step_skipped"] == 1 and int(new_state.step) == 1
  with_lora = policy.score(batch["input_ids"], batch["attention_mask"]).logp
  without = policy.score(batch["input_ids"], batch["attention_mask"], use_lora=False).logp
  sequence_kl = float(jnp.sum(jnp.where(batch["action_mask"] > 0, with_lora - without, 0)) / 8)
  assert abs(sequence_kl) > 1e-3
  np.testing.assert_allclose(metrics["kl"], sequence_kl, rtol=1e-4, atol=1e-5)
  error = np.clip(sequence_kl / 6.0 - 1, -0.2, 0.2)
  np.testing.assert_allclose(new_state.kl.value, KL_COEF * (1 + error * 8 / 10000.0), rtol=1e-6)
