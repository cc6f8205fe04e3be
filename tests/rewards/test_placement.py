"""place_step_rewards / token_rewards against the reference loops and by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from steptool_jax.rewards.placement import place_step_rewards, token_rewards, weighted_step_rewards
from tests.rl import reference
from tests.rl.strategies import layouts

place = jax.jit(place_step_rewards, static_argnames=("weighting",))

# Step 0 on tokens 1-2, step 1 on token 4, step 2 on tokens 6-8; rewards .5, .25, 1 (IsSolved).
HAND_IDS = np.array([[-1, 0, 0, -1, 1, -1, 2, 2, 2, -1]])
HAND_REWARDS = np.array([[0.5, 0.25, 1.0, 0.0]])  # padded to S = 4


def test_hand_worked_weightings():
  np.testing.assert_allclose(place(HAND_REWARDS, HAND_IDS, "paper"),
                             [[0, 0, 0.5, 0, 0.25, 0, 0, 0, 1.0, 0]])
  # T = 3 steps: weights 2, 1, 0; the final IsSolved reward vanishes.
  np.testing.assert_allclose(place(HAND_REWARDS, HAND_IDS, "original_code"),
                             [[0, 0, 1.0, 0, 0.25, 0, 0, 0, 0, 0]])
  np.testing.assert_allclose(place(HAND_REWARDS, HAND_IDS, "final_only"),
                             [[0, 0, 0, 0, 0, 0, 0, 0, 1.0, 0]])
  # 0.5 + 0.25 + 1.0 on the last action token; the padding slot (num_steps = 3) is not summed.
  np.testing.assert_allclose(place(HAND_REWARDS + [[0, 0, 0, 9.0]], HAND_IDS, "summed", num_steps=np.array([3])),
                             [[0, 0, 0, 0, 0, 0, 0, 0, 1.75, 0]])


def test_original_code_uses_num_steps_of_truncated_rows():
  # Same tokens, but the row had 5 steps and the first two were truncated away, so the ids
  # present are 2, 3, 4 and the weights are 5-1-k: 2, 1, 0.
  ids = np.where(HAND_IDS >= 0, HAND_IDS + 2, -1)
  rewards = np.array([[0.9, 0.9, 0.5, 0.25, 1.0, 0.0]])
  got = place(rewards, ids, "original_code", num_steps=np.array([5]))
  np.testing.assert_allclose(got, [[0, 0, 1.0, 0, 0.25, 0, 0, 0, 0, 0]])
  # Without num_steps the count comes from the largest id present (4 + 1): the same.
  np.testing.assert_allclose(place(rewards, ids, "original_code"), got)


@settings(max_examples=30, deadline=None)
@given(layouts())
def test_paper_and_final_only_match_reference(layout):
  got = place(layout.step_rewards, layout.step_ids, "paper", num_steps=layout.num_steps)
  np.testing.assert_allclose(got, reference.place_paper_loop(layout.step_rewards, layout.step_ids), atol=1e-7)

  finals = [[1.0 if s == n - 1 else 0.0 for s in range(layout.step_rewards.shape[1])] for n in layout.num_steps]
  got = place(layout.step_rewards, layout.step_ids, "final_only", num_steps=layout.num_steps)
  np.testing.assert_allclose(got, reference.place_paper_loop(layout.step_rewards, layout.step_ids, finals),
                             atol=1e-7)


@settings(max_examples=30, deadline=None)
@given(layouts(adjacent_steps=False))
def test_original_code_matches_the_original_mask_walk(layout):
  # The original walks runs of the action mask backwards, so it needs steps separated
  # by at least one observation token (always true for real data).
  scores = [list(row[:n]) for row, n in zip(layout.step_rewards, layout.num_steps)]
  want = reference.place_original_loop(scores, layout.action_mask)
  got = place(layout.step_rewards, layout.step_ids, "original_code", num_steps=layout.num_steps)
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_token_rewards_subtracts_the_kl_penalty_on_action_tokens_only():
  kl = np.linspace(-0.5, 0.4, 10).reshape(1, 10).astype(np.float32)
  mask = (HAND_IDS >= 0).astype(np.int32)
  got = jax.jit(token_rewards, static_argnames=("weighting",))(
      HAND_REWARDS, HAND_IDS, mask, kl, kl_coef=0.3)
  placed = np.array([[0, 0, 0.5, 0, 0.25, 0, 0, 0, 1.0, 0]])
  want = placed - 0.3 * kl * mask
  np.testing.assert_allclose(got, want, atol=1e-6)
  assert got[0, 0] == 0.0  # the KL of an observation token is not a reward


def test_ids_out_of_range_place_nothing_and_empty_rows_give_zeros():
  ids = np.array([[0, 7, -1], [-1, -1, -1]])
  got = place(np.array([[1.0, 2.0], [3.0, 4.0]]), ids, "paper")
  np.testing.assert_allclose(got, [[1.0, 0, 0], [0, 0, 0]])


def test_rejects_unknown_weighting():
  with pytest.raises(ValueError, match="weighting"):
    place_step_rewards(jnp.zeros((1, 1)), jnp.zeros((1, 1), jnp.int32), "linear")


def test_token_rewards_ignore_garbage_kl_off_the_mask():
  kl = np.where(HAND_IDS >= 0, 0.5, np.nan).astype(np.float32)
  got = jax.jit(token_rewards, static_argnames=("weighting",))(
      HAND_REWARDS, HAND_IDS, (HAND_IDS >= 0).astype(np.int32), kl, kl_coef=0.2)
  want = np.array([[0, 0, 0.5, 0, 0.25, 0, 0, 0, 1.0, 0]]) - 0.1 * (HAND_IDS >= 0)
  np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("weighting", ["paper", "original_code", "final_only"])
def test_vmap_over_rows_equals_the_batched_call(weighting):
  ids = np.concatenate([HAND_IDS, np.where(HAND_IDS >= 1, HAND_IDS - 1, -1)])
  rewards = np.concatenate([HAND_REWARDS, [[0.3, 0.6, 0.0, 0.0]]])
  per_row = jax.jit(jax.vmap(lambda r, i: place_step_rewards(r, i, weighting)))(rewards, ids)
  np.testing.assert_allclose(per_row, place(rewards, ids, weighting))


@pytest.mark.parametrize("weighting", ["paper", "original_code", "final_only", "summed"])
def test_weighted_step_rewards_are_what_placement_puts_on_each_step(weighting):
  # Rows of 3 and 2 steps (3 step slots), every step with tokens.
  step_ids = jnp.array([[-1, 0, 0, -1, 1, -1, 2, 2], [-1, -1, 0, 0, -1, 1, -1, -1]])
  step_rewards = jnp.array([[0.5, 1.0, 0.25], [0.0, 0.75, 9.0]])  # 9.0 sits in a padding slot
  num_steps = jnp.array([3, 2])
  per_step = weighted_step_rewards(step_rewards, num_steps, weighting)
  expected = {"paper": [[0.5, 1.0, 0.25], [0.0, 0.75, 0.0]],
              "original_code": [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]],
              "final_only": [[0.0, 0.0, 0.25], [0.0, 0.75, 0.0]],
              "summed": [[0.0, 0.0, 1.75], [0.0, 0.75, 0.0]]}[weighting]
  np.testing.assert_allclose(per_step, expected)
  np.testing.assert_allclose(place_step_rewards(per_step, step_ids, "paper"),
                             place_step_rewards(step_rewards, step_ids, weighting, num_steps=num_steps))
