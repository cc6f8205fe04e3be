"""The step reward formula on hand-worked annotations."""

import dataclasses

import pytest

from steptool_jax.data.annotations import read_reward_annotations
from steptool_jax.data.records import AnswerStatus, JudgeRun, RewardAnnotation, ToolCall
from steptool_jax.rewards.shaping import step_reward, step_rewards_from_annotation


@pytest.fixture(scope="module")
def annotations(reference_dir):
  return {a.query_id: a for a in read_reward_annotations(reference_dir / "reward_annotation_G123.json")}


def test_query_44426_final_reward_is_five_sixths(annotations):
  # One step, SC 1 and Con 5 in all three runs -> (1 + 5/5)/2 = 1; IsSolved Unsure, Solved, Solved.
  assert step_rewards_from_annotation(annotations["44426"]) == pytest.approx((1.0, 5 / 6))


def test_query_32980_by_hand(annotations):
  # Run 2 gives Con 3 and 1 on steps 3 and 4: (1 + 3/5)/2 = 0.8, (1 + 1/5)/2 = 0.6.
  assert step_rewards_from_annotation(annotations["32980"]) == pytest.approx(
      (1.0, 1.0, (1 + 1 + 0.8) / 3, (1 + 1 + 0.6) / 3, 1.0))


def test_query_56543_by_hand(annotations):
  # Step 1: SC 0,0,0; Con 1,1,2 -> (0.1 + 0.1 + 0.2)/3 = 4/30.
  # Step 2: SC 0,1,0; Con 2,3,3 -> (0.2 + 0.8 + 0.3)/3 = 13/30. Final: (0.5 + 0 + 0.5)/3 = 1/3.
  assert step_rewards_from_annotation(annotations["56543"]) == pytest.approx((4 / 30, 13 / 30, 1 / 3))


def test_three_runs_give_thirtieths_and_sixths(annotations):
  for annotation in annotations.values():
    rewards = step_rewards_from_annotation(annotation)
    assert len(rewards) == annotation.num_steps
    for reward in rewards[:-1]:
      assert reward * 30 == pytest.approx(round(reward * 30))
    assert rewards[-1] * 6 == pytest.approx(round(rewards[-1] * 6))


def test_alpha_weights_succ_calling():
  annotation = RewardAnnotation("q", "", (), (ToolCall("t", "{}"),), finish=ToolCall("Finish", "{}"), runs=(
      JudgeRun((1,), (0,), AnswerStatus.SOLVED), JudgeRun((0,), (5,), AnswerStatus.UNSOLVED)))
  # alpha = 3: run 1 (3*1 + 0)/4 = 0.75, run 2 (0 + 1)/4 = 0.25.
  assert step_rewards_from_annotation(annotation, alpha=3.0) == pytest.approx((0.5, 0.5))
  assert step_rewards_from_annotation(annotation, alpha=0.0) == pytest.approx((0.5, 0.5))
  assert step_reward(1, 5, alpha=1.0) == 1.0 and step_reward(0, 0) == 0.0
  with pytest.raises(ValueError, match="alpha"):
    step_reward(1, 5, alpha=-1.0)


def test_no_finish_no_final_reward(annotations):
  annotation = dataclasses.replace(annotations["44426"], finish=None)
  assert step_rewards_from_annotation(annotation) == pytest.approx((1.0,))
