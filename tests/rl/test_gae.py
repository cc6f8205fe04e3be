"""compute_gae against the plain reference loops and a hand-worked example."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from steptool_jax.rl.gae import compute_gae
from tests.rl import reference
from tests.rl.strategies import layouts

GAMMA, LAM = 0.99, 0.95
METHODS = ("auto", "scan", "associative", "chunked")


# gamma and lam are traced arguments: one compile per (shape, mode, method).
gae = jax.jit(compute_gae, static_argnames=("mode", "method"))


# Hand-worked, gamma = lam = 0.5 (gamma*lam = 0.25). Actions at 1, 2 (step 0) and 4 (step 1).
HAND_MASK = [[0, 1, 1, 0, 1, 0]]
HAND_REWARDS = [[0.0, 0.0, 0.5, 0.0, 1.0, 0.0]]
HAND_VALUES = [[0.3, 0.2, 0.4, 0.7, 0.6, 0.9]]  # off-action values must not matter


def test_hand_worked_step_mode():
  # k=2 (t=4): delta = 1 + 0 - .6 = .4,            A = .4
  # k=1 (t=2): delta = .5 + .5*.6 - .4 = .4,        A = .4 + .25*.4 = .5
  # k=0 (t=1): delta = 0 + .5*.4 - .2 = 0,          A = 0 + .25*.5 = .125
  adv, ret = gae(jnp.array(HAND_REWARDS), jnp.array(HAND_VALUES), jnp.array(HAND_MASK),
                 gamma=0.5, lam=0.5, mode="step")
  np.testing.assert_allclose(adv, [[0, 0.125, 0.5, 0, 0.4, 0]], atol=1e-6)
  np.testing.assert_allclose(ret, [[0, 0.325, 0.9, 0, 1.0, 0]], atol=1e-6)


def test_hand_worked_token_mode():
  # Masked values [0, .2, .4, 0, .6, 0]; every position is a time step:
  # t=5: 0; t=4: 1-.6 = .4; t=3: .5*.6 + .25*.4 = .4; t=2: .5-.4 + .25*.4 = .2;
  # t=1: .5*.4-.2 + .25*.2 = .05; t=0: .5*.2 + .25*.05 = .1125
  adv, ret = gae(jnp.array(HAND_REWARDS), jnp.array(HAND_VALUES), jnp.array(HAND_MASK),
                 gamma=0.5, lam=0.5, mode="token")
  np.testing.assert_allclose(adv, [[0.1125, 0.05, 0.2, 0.4, 0.4, 0]], atol=1e-6)
  np.testing.assert_allclose(ret, [[0.1125, 0.25, 0.6, 0.4, 1.0, 0]], atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(layouts())
def test_matches_reference_loops(layout):
  rng = np.random.default_rng(layout.rng_seed)
  shape = layout.step_ids.shape
  rewards = rng.normal(size=shape).astype(np.float32)
  values = rng.normal(size=shape).astype(np.float32)
  mask = layout.action_mask
  expected = {
      "token": reference.gae_token_loop(rewards, values, mask, GAMMA, LAM),
      "step": reference.gae_step_loop(rewards, values, mask, GAMMA, LAM),
  }
  for mode, (want_adv, want_ret) in expected.items():
    for method in METHODS:
      adv, ret = gae(rewards, values, mask, gamma=GAMMA, lam=LAM, mode=mode, method=method)
      np.testing.assert_allclose(adv, want_adv, rtol=1e-5, atol=2e-5, err_msg=f"{mode}/{method}")
      np.testing.assert_allclose(ret, want_ret, rtol=1e-5, atol=2e-5, err_msg=f"{mode}/{method}")


@pytest.mark.parametrize("mode", ["step", "token"])
def test_all_zero_mask_is_finite_with_finite_grads(mode):
  rewards = jnp.ones((2, 7))
  values = jnp.full((2, 7), 0.5)
  mask = jnp.zeros((2, 7), jnp.int32)

  def total(v):
    adv, ret = compute_gae(rewards, v, mask, gamma=GAMMA, lam=LAM, mode=mode)
    return jnp.sum(adv) + jnp.sum(ret)

  value, grad = jax.jit(jax.value_and_grad(total))(values)
  assert value == 0.0
  np.testing.assert_array_equal(grad, np.zeros((2, 7)))


def test_vmap_over_an_extra_axis_equals_the_flat_call():
  rng = np.random.default_rng(0)
  rewards, values = rng.normal(size=(2, 3, 10)), rng.normal(size=(2, 3, 10))
  mask = (rng.random((2, 3, 10)) < 0.6).astype(np.int32)
  step_gae = functools.partial(compute_gae, gamma=GAMMA, lam=LAM)
  vmapped = jax.jit(jax.vmap(step_gae))(rewards, values, mask)
  flat = jax.jit(step_gae)(rewards.reshape(6, 10), values.reshape(6, 10), mask.reshape(6, 10))
  for got, want in zip(vmapped, flat):
    np.testing.assert_allclose(np.asarray(got).reshape(6, 10), want, rtol=1e-6, atol=1e-6)


def test_step_mode_ignores_observation_tokens_token_mode_does_not():
  # Actions at t=0 and t=21 with 20 observation tokens between; V = 0 then 1, r = 0 then 1.
  # step:  A(21) = 1 + 0 - 1 = 0;  A(0) = (0 + .9*1 - 0) + .9*0 = .9     (one discount)
  # token: A(21) = 0;  A(20) = .9*1 = .9;  A(t<20) = .9*A(t+1)  =>  A(0) = .9**21
  mask = np.array([[1] + [0] * 20 + [1]])
  rewards = np.zeros((1, 22), np.float32)
  values = np.zeros((1, 22), np.float32)
  rewards[0, 21] = values[0, 21] = 1.0
  step_adv, _ = gae(rewards, values, mask, gamma=0.9, lam=1.0, mode="step")
  token_adv, _ = gae(rewards, values, mask, gamma=0.9, lam=1.0, mode="token")
  assert float(step_adv[0, 0]) == pytest.approx(0.9, rel=1e-5)
  assert float(token_adv[0, 0]) == pytest.approx(0.9 ** 21, rel=1e-5)


def test_rejects_unknown_mode():
  with pytest.raises(ValueError, match="mode"):
    compute_gae(jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.ones((1, 2)), gamma=1.0, lam=1.0, mode="steps")


def test_garbage_off_the_mask_does_not_leak():
  values = np.array([[np.nan, 0.2, 0.4, np.inf, 0.6, -np.inf]], np.float32)
  rewards = np.array([[np.inf, 0.0, 0.5, np.nan, 1.0, 0.0]], np.float32)
  for mode, want in (("step", [[0, 0.125, 0.5, 0, 0.4, 0]]), ("token", [[0.1125, 0.05, 0.2, 0.4, 0.4, 0]])):
    adv, _ = gae(rewards, values, np.array(HAND_MASK), gamma=0.5, lam=0.5, mode=mode)
    np.testing.assert_allclose(adv, want, atol=1e-6, err_msg=mode)
