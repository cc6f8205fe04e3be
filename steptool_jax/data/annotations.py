"""Judge reward annotations (`reward_annotation_G123.json`).

Layout of one record (query id -> record):

    {"query": str, "tool_names": [str],
     "answer_steps": ["Step 1: {python-literal dict name/arguments/response}", ...],
     "final_step": "Final step: {python-literal dict}",
     "process_reward": {"0": {"succeed_tool_calling": [0|1 per step],
                              "contributions": [0..5 per step]}, "1": ...},
     "is_solved": {"0": "AnswerStatus.Solved", "1": ...}}

`answer_steps` are the intermediate steps (Finish excluded); each judge run scores
every one of them. The step dicts are Python literals (single-quoted), parsed by
`literals.parse_literal` (linear in their size, a key given twice is an error). Tool
responses in this file are often cut with `...` by the judge prompt; they are kept as
written. Judge-run keys are canonical decimals (`"0"`, `"1"`, ...: no sign, no leading
zero), so two keys can never name the same run; scores are integers (a bool is not one).
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterator

from steptool_jax.data.errors import DataError, describe, short_repr
from steptool_jax.data.files import keep_valid, load_json_records
from steptool_jax.data.literals import LiteralError, parse_literal
from steptool_jax.data.records import AnswerStatus, JudgeRun, RewardAnnotation, ToolCall, ToolSpec, Trajectory

_EXPECTED_FILE = "judge reward annotations (query id -> {answer_steps, process_reward, is_solved, ...})"
_STEP = re.compile(r"\s*Step\s+([0-9]+)\s*:\s*(.*)", re.DOTALL)
_RUN_KEY = re.compile(r"0|[1-9][0-9]{0,8}")
_FINAL_STEP = re.compile(r"\s*Final step\s*:\s*(.*)", re.DOTALL)
MAX_CONTRIBUTION = 5


def iter_reward_annotations(path: str | os.PathLike[str]) -> Iterator[RewardAnnotation | DataError]:
  """Each query's annotation, or the `DataError` saying why its record is bad."""
  data, bad = load_json_records(path, expected=_EXPECTED_FILE)
  for query_id, record in data.items():
    if query_id in bad:
      yield bad[query_id]
      continue
    try:
      yield parse_reward_annotation(path, query_id, record)
    except DataError as e:
      yield e


def read_reward_annotations(path: str | os.PathLike[str], *, skip_invalid: bool = False,
                            errors: list[DataError] | None = None) -> list[RewardAnnotation]:
  """Every annotation in file order; the first bad record raises unless `skip_invalid`."""
  return keep_valid(iter_reward_annotations(path), skip_invalid=skip_invalid, errors=errors)


def trajectory_from_annotation(annotation: RewardAnnotation) -> Trajectory:
  """The annotated trajectory (tools known by name only, as the file records them)."""
  return Trajectory(query_id=annotation.query_id, query=annotation.query,
                    tools=tuple(ToolSpec(name=name) for name in annotation.tool_names),
                    calls=annotation.calls, finish=annotation.finish)


def parse_reward_annotation(path: str | os.PathLike[str], query_id: str, record: Any) -> RewardAnnotation:
  """One annotation from its JSON record."""
  if not isinstance(record, dict):
    raise DataError(path, query_id, "", f"expected an object with answer_steps, process_reward, is_solved,"
                    f" found {describe(record)}")
  query = record.get("query", "")
  if not isinstance(query, str):
    raise DataError(path, query_id, "query", f"expected a string, found {describe(query)}")
  tool_names = record.get("tool_names", [])
  if not isinstance(tool_names, list) or not all(isinstance(name, str) for name in tool_names):
    raise DataError(path, query_id, "tool_names", f"expected a list of strings, found {describe(tool_names)}")
  steps = record.get("answer_steps")
  if not isinstance(steps, list):
    raise DataError(path, query_id, "answer_steps", f"expected a list of 'Step i: {{...}}' strings,"
                    f" found {describe(steps)}")
  calls = tuple(_parse_step(path, query_id, i, text) for i, text in enumerate(steps))
  finish = _parse_final_step(path, query_id, record.get("final_step"))
  runs = _parse_runs(path, query_id, record, num_steps=len(calls))
  return RewardAnnotation(query_id=str(query_id), query=query, tool_names=tuple(tool_names), calls=calls,
                          finish=finish, runs=runs)


def _parse_step(path: str | os.PathLike[str], query_id: str, index: int, text: Any) -> ToolCall:
  field = f"answer_steps[{index}]"
  match = _STEP.fullmatch(text) if isinstance(text, str) else None
  if match is None:
    raise DataError(path, query_id, field, f"expected 'Step {index + 1}: {{...}}', found {describe(text)}")
  number = match.group(1).lstrip("0")
  if number != str(index + 1):  # compared as text: a number of any length is no crash
    found = number if len(number) <= 20 else f"a number of {len(number):,} digits"
    raise DataError(path, query_id, field, f"expected step number {index + 1}, found {found or 0}")
  return _parse_call_literal(path, query_id, field, match.group(2))


def _parse_final_step(path: str | os.PathLike[str], query_id: str, text: Any) -> ToolCall | None:
  if text is None or (isinstance(text, str) and not text.strip()):
    return None  # the episode ended without a Finish call
  match = _FINAL_STEP.fullmatch(text) if isinstance(text, str) else None
  if match is None:
    raise DataError(path, query_id, "final_step", f"expected 'Final step: {{...}}', found {describe(text)}")
  return _parse_call_literal(path, query_id, "final_step", match.group(1))


def _parse_call_literal(path: str | os.PathLike[str], query_id: str, field: str, text: str) -> ToolCall:
  try:
    value = parse_literal(text)
  except LiteralError as e:
    raise DataError(path, query_id, field, f"expected a Python-literal dict {{'name', 'arguments', 'response'}},"
                    f" {e}") from None
  if not isinstance(value, dict):
    raise DataError(path, query_id, field, f"expected a dict {{'name', 'arguments', 'response'}},"
                    f" found {describe(value)}")
  name = value.get("name")
  if not isinstance(name, str) or not name:
    raise DataError(path, query_id, f"{field}.name", f"expected a tool name, found {describe(name)}")
  parts = {}
  for key in ("arguments", "response", "thought"):
    part = value.get(key, "")
    if not isinstance(part, str):
      raise DataError(path, query_id, f"{field}.{key}", f"expected a string, found {describe(part)}")
    parts[key] = part
  return ToolCall(name=name, **parts)


def _indexed_runs(path: str | os.PathLike[str], query_id: str, field: str, value: Any) -> dict[int, Any]:
  """Runs stored as {"0": ..., "1": ...} (the original) or as a list."""
  if isinstance(value, list):
    return dict(enumerate(value))
  if not isinstance(value, dict):
    raise DataError(path, query_id, field, f"expected an object keyed by judge run ('0', '1', ...),"
                    f" found {describe(value)}")
  runs = {}
  for key, run in value.items():
    if not _RUN_KEY.fullmatch(key):  # canonical only: "0" and "00" would be the same run
      shown = key if len(key) <= 30 and key.isprintable() and key.strip() == key else short_repr(key, 30)
      raise DataError(path, query_id, f"{field}.{shown}", "expected a judge-run number as key"
                      f" ('0', '1', ...: no sign, spaces or leading zeros), found {describe(key)}")
    runs[int(key)] = run
  return dict(sorted(runs.items()))


def _parse_runs(path: str | os.PathLike[str], query_id: str, record: dict[str, Any], *, num_steps: int
                ) -> tuple[JudgeRun, ...]:
  scores = _indexed_runs(path, query_id, "process_reward", record.get("process_reward"))
  statuses = _indexed_runs(path, query_id, "is_solved", record.get("is_solved"))
  if not scores:
    raise DataError(path, query_id, "process_reward", "expected at least one judge run, found none")
  runs = []
  for run, score in scores.items():
    field = f"process_reward.{run}"
    if not isinstance(score, dict):
      raise DataError(path, query_id, field, f"expected {{succeed_tool_calling, contributions}},"
                      f" found {describe(score)}")
    succeeded = _scores(path, query_id, f"{field}.succeed_tool_calling", score.get("succeed_tool_calling"),
                        num_steps=num_steps, high=1)
    contributions = _scores(path, query_id, f"{field}.contributions", score.get("contributions"),
                            num_steps=num_steps, high=MAX_CONTRIBUTION)
    if run not in statuses:
      raise DataError(path, query_id, f"is_solved.{run}", f"expected a status for judge run {run}, found none")
    try:
      status = AnswerStatus.parse(statuses[run])
    except ValueError as e:
      raise DataError(path, query_id, f"is_solved.{run}", str(e)) from None
    runs.append(JudgeRun(succeed_tool_calling=succeeded, contributions=contributions, status=status))
  extra = sorted(set(statuses) - set(scores))
  if extra:
    raise DataError(path, query_id, f"is_solved.{extra[0]}",
                    f"expected a matching process_reward run, found a status for run {extra[0]} only")
  return tuple(runs)


def _scores(path: str | os.PathLike[str], query_id: str, field: str, values: Any, *, num_steps: int,
            high: int) -> tuple[int, ...]:
  if not isinstance(values, list):
    raise DataError(path, query_id, field, f"expected a list of integers 0..{high}, found {describe(values)}")
  if len(values) != num_steps:
    raise DataError(path, query_id, field, f"expected {num_steps} scores (one per answer step),"
                    f" found {len(values)}")
  scores = []
  for i, value in enumerate(values):
    # bool is an int in Python; true/false is not a score.
    integral = (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer())
    if not integral or not 0 <= value <= high:
      raise DataError(path, query_id, f"{field}[{i}]", f"expected an integer 0..{high}, found {describe(value)}")
    scores.append(int(value))
  return tuple(scores)
