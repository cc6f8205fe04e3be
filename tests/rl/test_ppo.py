"""The PPO loss against a per-token Python loop, its gradients, the ratio guard, empty masks."""

from __future__ import annotations

import functools
import math

import jax
import numpy as np
import pytest

from steptool_jax.rl.ppo import ppo_loss

# The paper's constants (the defaults of the run config's ppo section).
paper_loss = functools.partial(ppo_loss, clip_eps=0.2, value_clip=0.2, vf_coef=0.1, ratio_threshold=10.0,
                               kl_loss_kind="kl")
loss_and_grads = jax.jit(jax.value_and_grad(paper_loss, argnums=(0, 2), has_aux=True))
ppo = jax.jit(paper_loss)


def ppo_loop(logp, old_logp, values, old_values, adv, ret, mask, clip=0.2, vclip=0.2, vf_coef=0.1):
  """The loss written token by token from the textbook definition."""
  n = pg = vf = 0.0
  for row in zip(*(np.asarray(a, np.float64) for a in (logp, old_logp, values, old_values, adv, ret, mask))):
    for lp, olp, v, ov, a, r, m in zip(*row):
      if not m:
        continue
      ratio = math.exp(lp - olp)
      pg += max(-a * ratio, -a * min(max(ratio, 1 - clip), 1 + clip))
      v_clipped = ov + min(max(v - ov, -vclip), vclip)
      vf += 0.5 * max((v - r) ** 2, (v_clipped - r) ** 2)
      n += 1
  return pg / n + vf_coef * vf / n, pg / n, vf / n


def _batch(seed, shape=(3, 9)):
  rng = np.random.default_rng(seed)
  old_logp = rng.uniform(-3, -0.1, shape)
  logp = old_logp + rng.normal(0, 0.3, shape)      # ratios well inside and outside the clip
  old_values = rng.normal(size=shape)
  values = old_values + rng.normal(0, 0.3, shape)
  adv = rng.normal(size=shape)
  ret = old_values + adv
  mask = (rng.random(shape) < 0.7).astype(np.int32)
  mask[0, 0] = 1
  return [x.astype(np.float32) if x.dtype != np.int32 else x
          for x in (logp, old_logp, values, old_values, adv, ret, mask)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_matches_the_per_token_loop(seed):
  batch = _batch(seed)
  (loss, metrics), _ = loss_and_grads(*batch)
  want_loss, want_pg, want_vf = ppo_loop(*batch)
  assert float(loss) == pytest.approx(want_loss, rel=1e-5, abs=1e-6)
  assert float(metrics["policy_loss"]) == pytest.approx(want_pg, rel=1e-5, abs=1e-6)
  assert float(metrics["value_loss"]) == pytest.approx(want_vf, rel=1e-5, abs=1e-6)
  assert float(metrics["skipped"]) == 0.0


def test_gradient_is_the_unclipped_surrogate_on_unclipped_tokens_and_zero_on_clipped_ones():
  logp, old_logp, values, old_values, adv, ret, mask = _batch(4)
  (_, metrics), (grad_logp, _) = loss_and_grads(logp, old_logp, values, old_values, adv, ret, mask)
  ratio = np.exp(logp.astype(np.float64) - old_logp)
  n = mask.sum()
  # d/dlogp of max(-A r, -A clip(r)) / n: -A r / n where the unclipped term wins strictly, else 0.
  clipped = np.clip(ratio, 0.8, 1.2)
  active = (-adv * ratio > -adv * clipped) | (ratio == clipped)
  want = np.where(mask.astype(bool) & active, -adv * ratio / n, 0.0)
  np.testing.assert_allclose(grad_logp, want, rtol=1e-4, atol=1e-7)
  assert 0.0 < float(metrics["clip_fraction"]) < 1.0  # the batch really exercises both branches


def test_metrics_by_hand():
  # One token: ratio e^0.5 = 1.6487 > 1.2 with A = 1 -> clipped; approx_kl = .5 * .25
  logp, old_logp = np.array([[-1.0]]), np.array([[-1.5]])
  values, old_values = np.array([[0.5]]), np.array([[0.0]])
  adv = ret = mask = np.ones((1, 1))
  (loss, m), _ = loss_and_grads(logp, old_logp, values, old_values, adv, ret, mask)
  assert float(m["policy_loss"]) == pytest.approx(-1.2)
  # value: v = .5 (clipped to .2): max(.25, .64) / 2 = .32
  assert float(m["value_loss"]) == pytest.approx(0.32)
  assert float(loss) == pytest.approx(-1.2 + 0.1 * 0.32)
  assert float(m["clip_fraction"]) == 1.0 and float(m["value_clip_fraction"]) == 1.0
  assert float(m["approx_kl"]) == pytest.approx(0.125)
  assert float(m["policy_kl"]) == pytest.approx(-0.5)
  assert float(m["ratio_mean"]) == pytest.approx(math.exp(0.5), rel=1e-6)


def test_ratio_guard_zeroes_loss_and_gradients():
  logp, old_logp, values, old_values, adv, ret, mask = _batch(5)
  logp = old_logp + 3.0  # ratio e^3 = 20 > 10 everywhere
  (loss, metrics), (g_logp, g_values) = loss_and_grads(logp, old_logp, values, old_values, adv, ret, mask)
  assert float(loss) == 0.0 and float(metrics["skipped"]) == 1.0
  assert float(metrics["ratio_mean"]) == pytest.approx(math.exp(3.0), rel=1e-5)
  np.testing.assert_array_equal(g_logp, 0.0)
  np.testing.assert_array_equal(g_values, 0.0)


def test_all_zero_mask_is_finite():
  batch = _batch(6)
  batch[-1] = np.zeros_like(batch[-1])
  (loss, metrics), grads = loss_and_grads(*batch)
  assert float(loss) == 0.0
  assert all(np.isfinite(float(v)) for v in metrics.values())
  for g in grads:
    np.testing.assert_array_equal(g, 0.0)


def test_entropy_bonus_and_kl_loss_terms():
  logp, old_logp, values, old_values, adv, ret, mask = _batch(7)
  rng = np.random.default_rng(7)
  logits = rng.normal(size=logp.shape + (6,)).astype(np.float32)
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  entropy = (-(p * np.log(p)).sum(-1)).astype(np.float32)
  ref_logp = logp - 0.1
  base, _ = ppo(logp, old_logp, values, old_values, adv, ret, mask)
  full, m = ppo(logp, old_logp, values, old_values, adv, ret, mask, entropy=entropy, entropy_coef=0.01,
                ref_logp=ref_logp, kl_loss_coef=0.5)
  picked = mask.astype(bool)
  assert float(m["kl_loss"]) == pytest.approx(0.1, rel=1e-4)
  assert float(full) == pytest.approx(float(base) - 0.01 * float(np.asarray(entropy)[picked].mean()) + 0.5 * 0.1,
                                      rel=1e-5)


def test_garbage_off_the_mask_does_not_leak_into_loss_or_gradients():
  logp, old_logp, values, old_values, adv, ret, mask = _batch(8)
  (want, _), (want_g_logp, want_g_values) = loss_and_grads(logp, old_logp, values, old_values, adv, ret, mask)
  off = mask == 0
  poisoned = [np.where(off, bad, x).astype(np.float32)
              for x, bad in ((logp, np.nan), (old_logp, -np.inf), (values, np.inf), (old_values, np.nan))]
  (got, metrics), (g_logp, g_values) = loss_and_grads(*poisoned, adv, ret, mask)
  assert float(got) == pytest.approx(float(want), rel=1e-6)
  assert all(np.isfinite(float(v)) for v in metrics.values())
  np.testing.assert_allclose(g_logp, want_g_logp, rtol=1e-6, atol=1e-8)
  np.testing.assert_allclose(g_values, want_g_values, rtol=1e-6, atol=1e-8)
