"""Judging episodes by rules: IsSolved from gold facts, step rewards, pass rate, tool recall.

IsSolved (the paper's three-way verdict) compares the final answer with the task's gold
facts: every fact present -> Solved, some -> Unsure, none (or giving up, or no Finish at
all) -> Unsolved. A numeric fact is present when a number in the answer states it, exactly
or correctly rounded (the tools print rounded values; an agent may round again); a text
fact when it appears case- and accent-insensitively as whole words. Intermediate steps get SuccCalling and Contribution
from the foundation's rule annotator.

Contribution, two ways (`contribution=`):
- `"answer_overlap"` (default, the foundation's rule): the observation's words overlap the
  final answer (LCS coverage >= threshold). It measures consistency with the answer, not
  correctness: a call for the wrong city whose result the answer then repeats counts fully,
  and so does a redundant repeat of a useful call.
- `"reference"`: the call obtained an observation the task's reference solution (the
  mistake-free scripted expert) obtains, and no earlier call of the episode obtained it
  already. Wrong-entity calls, distractors and repeats get no Contribution, closer to what
  the paper's LLM judge rates ("did this step contribute to solving the task?").
"""

from __future__ import annotations

import dataclasses
import re
import statistics
from typing import Iterable, Mapping, Sequence

import json

from steptool_jax.data.records import AnswerStatus, Trajectory
from steptool_jax.envs.tables import normalize_name
from steptool_jax.envs.tasks import Task
from steptool_jax.rewards import rules
from steptool_jax.rewards.is_solved import IsSolvedSource
from steptool_jax.rewards.shaping import step_reward

CONTRIBUTIONS = ("answer_overlap", "reference")

# A number: digits with optional thousands separators and decimals, not glued to a word
# (so the 317 in the flight number AZ317 is not read as a number).
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w])")


def numbers_in(text: str) -> list[str]:
  """The numbers written in `text`, as written (thousands separators removed)."""
  return [match.group().replace(",", "") for match in _NUMBER.finditer(text)]


def _as_number(fact: str) -> float | None:
  try:
    return float(fact)
  except ValueError:
    return None


def number_matches(found: str, gold: float) -> bool:
  """Whether the number written as `found` states `gold`: exactly, or correctly rounded to
  the decimals written (1.98 for 1.9833 h, 129 for 128.74) as long as the rounding is
  within 0.5% (0.01 does not state 0.012)."""
  decimals = len(found.partition(".")[2])
  error = abs(float(found) - gold)
  return error <= 0.5 * 10.0 ** -decimals + 1e-9 and error <= 0.005 * abs(gold) + 1e-12


def fact_in_answer(fact: str, answer: str) -> bool:
  gold = _as_number(fact)
  if gold is not None:
    return any(number_matches(found, gold) for found in numbers_in(answer))
  pattern = r"(?<!\w)" + re.escape(normalize_name(fact)) + r"(?!\w)"
  return re.search(pattern, normalize_name(answer)) is not None


def answer_status(task: Task, trajectory: Trajectory) -> AnswerStatus:
  final = trajectory.final_answer
  if final is None or final.gave_up:
    return AnswerStatus.UNSOLVED
  present = sum(fact_in_answer(fact, final.final_answer) for fact in task.gold_facts)
  if present == len(task.gold_facts):
    return AnswerStatus.SOLVED
  return AnswerStatus.UNSURE if present else AnswerStatus.UNSOLVED


def is_solved_source(tasks: Iterable[Task]) -> IsSolvedSource:
  """The gold-fact verdict as a pluggable IsSolved source of the rule annotator (looked up
  by the trajectory's query id, which is the task id)."""
  by_id = {task.task_id: task for task in tasks}

  def source(trajectory: Trajectory) -> AnswerStatus:
    if trajectory.query_id not in by_id:
      raise KeyError(f"no task with id {trajectory.query_id!r}")
    return answer_status(by_id[trajectory.query_id], trajectory)
  return source


def tool_recall(task: Task, trajectory: Trajectory) -> float:
  """Share of the task's relevant tools that the agent called at least once (successfully or
  not: recall measures choosing the right tools, SuccCalling measures calling them well)."""
  called = {call.name for call in trajectory.calls}
  return sum(name in called for name in task.relevant_tools) / len(task.relevant_tools)


@dataclasses.dataclass(frozen=True)
class Judgement:
  """The rule judge's verdict on one episode."""

  task_id: str
  generalization: str
  status: AnswerStatus
  step_rewards: tuple[float, ...]
  succ_calling: tuple[int, ...]
  tool_recall: float

  @property
  def solved(self) -> bool:
    return self.status is AnswerStatus.SOLVED


def _payload(observation: str) -> str | None:
  """The observation's `response` as canonical JSON, or None for a failed call."""
  if not rules.succ_calling(observation):
    return None
  try:
    return json.dumps(json.loads(observation).get("response"), sort_keys=True)
  except (ValueError, AttributeError):
    return None


def reference_contributions(task: Task, trajectory: Trajectory) -> tuple[int, ...]:
  """Per intermediate call, 1 when it obtained an observation of the task's reference
  solution that no earlier call of the trajectory obtained, else 0."""
  from steptool_jax.envs.expert import run_expert  # noqa: PLC0415 (the expert imports the episode API)
  reference = run_expert(task).episode.calls
  remaining = [payload for payload in (_payload(call.response) for call in reference) if payload is not None]
  contributions = []
  for call in trajectory.calls:
    payload = _payload(call.response)
    if payload is not None and payload in remaining:
      remaining.remove(payload)
      contributions.append(1)
    else:
      contributions.append(0)
  return tuple(contributions)


def step_rewards(task: Task, trajectory: Trajectory, status: AnswerStatus, *, alpha: float = 1.0,
                 threshold: float = 0.3, contribution: str = "answer_overlap",
                 unfinished_reward: float = 0.0) -> tuple[float, ...]:
  """Intermediate rewards `(alpha SC + Con) / (alpha + 1)`, then IsSolved for the Finish step.

  An episode that never called Finish (it hit the step limit) has no answer to judge: its
  last action is its final step and gets `unfinished_reward` in place of an intermediate
  reward (0 = Unsolved; below 0 makes not answering worse than answering wrongly, so a
  policy paid for its calls cannot do better by never finishing, docs/results.md run 4).
  """
  if contribution == "answer_overlap":
    rewards = tuple(rules.annotate_by_rules(trajectory, status, alpha=alpha, threshold=threshold))
  elif contribution == "reference":
    rewards = tuple(step_reward(rules.succ_calling(call.response), con, alpha=alpha, contribution_scale=1)
                    for call, con in zip(trajectory.calls, reference_contributions(task, trajectory)))
    rewards += (status.reward,) if trajectory.finish is not None else ()
  else:
    raise ValueError(f"contribution: expected one of {CONTRIBUTIONS}, found {contribution!r}")
  if trajectory.finish is None and rewards:
    rewards = rewards[:-1] + (float(unfinished_reward),)
  return rewards


def judge(task: Task, trajectory: Trajectory, *, alpha: float = 1.0, threshold: float = 0.3,
          contribution: str = "answer_overlap", unfinished_reward: float = 0.0) -> Judgement:
  status = answer_status(task, trajectory)
  return Judgement(
      task_id=task.task_id, generalization=task.generalization, status=status,
      step_rewards=step_rewards(task, trajectory, status, alpha=alpha, threshold=threshold,
                                contribution=contribution, unfinished_reward=unfinished_reward),
      succ_calling=tuple(rules.succ_calling(call.response) for call in trajectory.calls),
      tool_recall=tool_recall(task, trajectory))


def _mean(values: Sequence[float]) -> float:
  return statistics.fmean(values) if values else 0.0


def summarize(judgements: Iterable[Judgement]) -> dict[str, object]:
  """Pass rate (share Solved), the mean IsSolved reward (Solved 1, Unsure 0.5), tool recall,
  and the pass rate per generalization group."""
  judgements = list(judgements)
  calls = [sc for j in judgements for sc in j.succ_calling]
  by_group: dict[str, list[Judgement]] = {}
  for j in judgements:
    by_group.setdefault(j.generalization, []).append(j)
  return {
      "episodes": len(judgements),
      "pass_rate": _mean([j.solved for j in judgements]),
      "unsure_rate": _mean([j.status is AnswerStatus.UNSURE for j in judgements]),
      "mean_is_solved": _mean([j.status.reward for j in judgements]),
      "tool_recall": _mean([j.tool_recall for j in judgements]),
      "mean_calls": _mean([len(j.succ_calling) for j in judgements]),
      "failed_call_rate": _mean([1 - sc for sc in calls]),
      "pass_rate_by_group": {group: _mean([j.solved for j in js]) for group, js in sorted(by_group.items())},
  }


def status_counts(judgements: Iterable[Judgement]) -> Mapping[str, int]:
  counts = {status.value: 0 for status in AnswerStatus}
  for j in judgements:
    counts[j.status.value] += 1
  return counts
