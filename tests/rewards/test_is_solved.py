"""IsSolved sources."""

import json

import pytest

from steptool_jax.data.annotations import read_reward_annotations
from steptool_jax.data.records import AnswerStatus, ToolCall, Trajectory
from steptool_jax.rewards.is_solved import covers_gold, from_annotations, from_gold_answers, give_up_rule


def _trajectory(query_id="44426", return_type="give_answer", answer="The team is the New England Patriots."):
  finish = ToolCall("Finish", json.dumps({"return_type": return_type, "final_answer": answer}))
  return Trajectory(query_id, "q", (), (), finish)


def test_give_up_rule():
  source = give_up_rule()
  assert source(_trajectory(return_type="give_up_and_restart")) == AnswerStatus.UNSOLVED
  assert source(Trajectory("1", "q", (), (), finish=None)) == AnswerStatus.UNSOLVED
  assert source(_trajectory()) == AnswerStatus.UNSURE
  assert give_up_rule(AnswerStatus.SOLVED)(_trajectory()) == AnswerStatus.SOLVED


def test_existing_annotation(reference_dir):
  source = from_annotations(read_reward_annotations(reference_dir / "reward_annotation_G123.json"))
  assert source(_trajectory("44426")) == pytest.approx(5 / 6)
  assert source(_trajectory("56543")) == pytest.approx(1 / 3)
  with pytest.raises(KeyError, match="no reward annotation for query id '1'"):
    source(_trajectory("1"))
  # The give-up rule overrides the annotation.
  assert give_up_rule(source)(_trajectory("44426", return_type="give_up_and_restart")) == AnswerStatus.UNSOLVED


def test_gold_answers():
  assert covers_gold("The team is the New England Patriots.", "new england patriots")
  assert not covers_gold("The team is the New England Patriots.", "Patriots of New England")
  assert not covers_gold("anything", "")
  source = from_gold_answers({"44426": "New England Patriots", "7": "Boston"})
  assert source(_trajectory("44426")) == AnswerStatus.SOLVED
  assert source(_trajectory("7")) == AnswerStatus.UNSOLVED
  exact = from_gold_answers({"44426": "patriots"}, check=lambda answer, gold: answer == gold)
  assert exact(_trajectory("44426")) == AnswerStatus.UNSOLVED
