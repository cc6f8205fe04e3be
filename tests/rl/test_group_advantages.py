"""Critic-free group-normalised step advantages against loops and a hand-worked group."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from steptool_jax.rl.group_advantages import critic_free_advantages, group_step_advantages, step_returns_to_go
from tests.rl import reference

advantages = jax.jit(group_step_advantages, static_argnames=("scope",))


def test_hand_worked_group():
  # Query A: rollout 0 (2 steps: .5 then solved 1), rollout 1 (1 step: unsolved 0). Query B: rollout 2 alone.
  rewards = np.array([[0.5, 1.0], [0.0, 0.0], [0.2, 0.0]])
  num_steps = np.array([2, 1, 1])
  groups = np.array([7, 7, 3])
  np.testing.assert_allclose(jax.jit(step_returns_to_go)(rewards, num_steps, gamma=0.5),
                             [[1.0, 1.0], [0, 0], [0.2, 0]])
  # gamma 1: returns-to-go 1.5, 1 | 0 | .2. Group A pools 1.5, 1 and 0; group B has one step.
  pool = [1.5, 1.0, 0.0]
  mean = sum(pool) / 3
  std = math.sqrt(sum((p - mean) ** 2 for p in pool) / 3)
  got = advantages(rewards, num_steps, groups, scope="group", eps=0.0)
  np.testing.assert_allclose(got, [[(1.5 - mean) / std, (1.0 - mean) / std], [(0 - mean) / std, 0], [0, 0]],
                             rtol=1e-6)
  # scope="step": step 0 pools 1.5 and 0 -> +1, -1; step 1 has rollout 0 alone -> 0.
  got = advantages(rewards, num_steps, groups, scope="step", eps=0.0)
  np.testing.assert_allclose(got, [[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]], atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["group", "step"]), st.sampled_from([1.0, 0.9]))
@example(860957, "step", 0.9)  # three equal returns whose float32 mean is an ulp off (found by this test)
def test_matches_loop(seed, scope, gamma):
  rng = np.random.default_rng(seed)
  num_steps = rng.integers(0, 6, size=8)
  rewards = np.where(np.arange(5) < num_steps[:, None], rng.choice([0.0, 0.5, 1.0], size=(8, 5)), 0.0)
  groups = rng.integers(0, 3, size=8) * 11
  got = advantages(rewards.astype(np.float32), num_steps, groups, gamma=gamma, scope=scope, eps=1e-6)
  want = reference.group_advantages_loop(rewards, num_steps, groups, gamma, scope, 1e-6)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_equal_returns_whose_float_mean_is_inexact_have_no_advantage():
  # Three rollouts of one query that did the same: step rewards (0, 0, 0.5), gamma 0.9, so the
  # returns-to-go are 0.405, 0.45, 0.5 in every rollout. 0.405 is not a float32 and the mean
  # of three of them misses it by an ulp. By hand: no spread at any step, every advantage 0.
  rewards = np.tile(np.array([0.0, 0.0, 0.5], np.float32), (3, 1))
  got = group_step_advantages(rewards, np.array([3, 3, 3]), np.array([4, 4, 4]), gamma=0.9, scope="step", eps=1e-6)
  np.testing.assert_array_equal(np.asarray(got), np.zeros((3, 3), np.float32))


def test_token_broadcast():
  step_ids = np.array([[-1, 0, 0, -1, 1, -1], [-1, -1, 0, -1, -1, -1]])
  rewards = np.array([[0.0, 1.0], [1.0, 0.0]])
  got = jax.jit(critic_free_advantages)(rewards, step_ids, np.array([2, 1]), np.array([0, 0]))
  # returns-to-go 1, 1 | 1: all equal within the group -> advantage 0 everywhere
  np.testing.assert_allclose(got, np.zeros((2, 6)), atol=1e-6)
  rewards = np.array([[0.0, 1.0], [0.0, 0.0]])
  got = np.asarray(jax.jit(critic_free_advantages)(rewards, step_ids, np.array([2, 1]), np.array([0, 0])))
  # pool 1, 1, 0: mean 2/3, std sqrt(2)/3 -> +1/sqrt(2) on row 0's tokens, -sqrt(2) on row 1's
  np.testing.assert_allclose(got[0], [0, 2 ** -0.5, 2 ** -0.5, 0, 2 ** -0.5, 0], rtol=1e-5)
  np.testing.assert_allclose(got[1], [0, 0, -(2 ** 0.5), 0, 0, 0], rtol=1e-5)


def test_rejects_unknown_scope():
  with pytest.raises(ValueError, match="scope"):
    group_step_advantages(np.zeros((1, 1)), np.ones(1), np.zeros(1), scope="token")
