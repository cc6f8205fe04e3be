"""Pluggable sources of the IsSolved verdict for the rule-based annotator.

A source maps a trajectory to its final-step verdict: an `AnswerStatus`, or an already
averaged reward in [0, 1] (several judge runs). Sources compose: `give_up_rule` wraps any
other source so that a give-up (or a missing Finish) is Unsolved whatever the other says.
"""

from __future__ import annotations

import statistics
from typing import Callable, Iterable, Mapping

from steptool_jax.data.records import AnswerStatus, RewardAnnotation, Trajectory
from steptool_jax.rewards.lcs import lcs_length, words

Verdict = AnswerStatus | float
IsSolvedSource = Callable[[Trajectory], Verdict]
AnswerCheck = Callable[[str, str], bool]


def give_up_rule(otherwise: AnswerStatus | IsSolvedSource = AnswerStatus.UNSURE) -> IsSolvedSource:
  """Unsolved when the agent gave up or never called Finish; else `otherwise`.

  With no other evidence the default for an answered query is Unsure (0.5): the rules can
  see that an answer was given, not that it is right.
  """
  def source(trajectory: Trajectory) -> Verdict:
    final = trajectory.final_answer
    if final is None or final.gave_up:
      return AnswerStatus.UNSOLVED
    return otherwise(trajectory) if callable(otherwise) else otherwise
  return source


def from_annotations(annotations: Iterable[RewardAnnotation]) -> IsSolvedSource:
  """The mean IsSolved reward over the judge runs of the annotation with the same query id."""
  by_query = {annotation.query_id: annotation for annotation in annotations}

  def source(trajectory: Trajectory) -> Verdict:
    annotation = by_query.get(trajectory.query_id)
    if annotation is None:
      raise KeyError(f"no reward annotation for query id {trajectory.query_id!r}")
    return statistics.fmean(run.status.reward for run in annotation.runs)
  return source


def covers_gold(final_answer: str, gold_answer: str) -> bool:
  """True when every word of the gold answer appears, in order, in the final answer."""
  gold = words(gold_answer)
  return bool(gold) and lcs_length(gold, words(final_answer)) == len(gold)


def from_gold_answers(gold_answers: Mapping[str, str], *, check: AnswerCheck = covers_gold) -> IsSolvedSource:
  """Solved when `check(final_answer, gold)` holds for the query's gold answer, else Unsolved."""
  def source(trajectory: Trajectory) -> Verdict:
    if trajectory.query_id not in gold_answers:
      raise KeyError(f"no gold answer for query id {trajectory.query_id!r}")
    final = trajectory.final_answer
    answer = final.final_answer if final is not None else ""
    return AnswerStatus.SOLVED if check(answer, gold_answers[trajectory.query_id]) else AnswerStatus.UNSOLVED
  return source
