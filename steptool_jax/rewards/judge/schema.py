"""The `evaluate_process_reward` function the judge is forced to call, and the check of
what it answered.

The schema carries the exact list length (`minItems` = `maxItems` = number of steps), the
value ranges and the status enum, so servers with schema-guided decoding (vLLM, SGLang)
cannot produce an out-of-range answer in the first place. Everything is still checked on
our side: a judge answer becomes a `JudgeRun` only when every value is in range and both
lists have one entry per intermediate step; anything else raises `JudgeOutputError`, which
the client treats as a failed attempt (retried, then reported), never as a reward.
"""

from __future__ import annotations

import json
from typing import Any

from steptool_jax.data.errors import describe
from steptool_jax.data.records import AnswerStatus, JudgeRun

FUNCTION_NAME = "evaluate_process_reward"
MAX_CONTRIBUTION = 5
STATUSES = tuple(status.value for status in AnswerStatus)


class JudgeOutputError(ValueError):
  """The judge's answer is not a valid evaluation (the message says what is wrong)."""


def evaluation_tool(num_steps: int) -> dict[str, Any]:
  """The OpenAI `tools` entry for a trajectory with `num_steps` intermediate steps."""
  def scores(high: int, description: str) -> dict[str, Any]:
    return {"type": "array", "description": description, "minItems": num_steps, "maxItems": num_steps,
            "items": {"type": "integer", "minimum": 0, "maximum": high}}
  return {
      "type": "function",
      "function": {
          "name": FUNCTION_NAME,
          "description": "Report the grades of every intermediate step and of the final answer.",
          "parameters": {
              "type": "object",
              "properties": {
                  "succeed_tool_calling": scores(
                      1, "Per intermediate step, in order: 1 if the tool call succeeded, else 0."),
                  "contribution_to_final_answer": scores(
                      MAX_CONTRIBUTION, "Per intermediate step, in order: how much it contributed to the"
                      " final answer, 0 (nothing) to 5 (the answer rests on it)."),
                  "final_answer_status": {"type": "string", "enum": list(STATUSES),
                                          "description": "Whether the final answer solves the request."},
              },
              "required": ["succeed_tool_calling", "contribution_to_final_answer", "final_answer_status"],
          },
      },
  }


def forced_tool_choice() -> dict[str, Any]:
  """`tool_choice` that makes the model call `evaluate_process_reward` (no free text)."""
  return {"type": "function", "function": {"name": FUNCTION_NAME}}


def judge_run_from_completion(completion: Any, num_steps: int) -> JudgeRun:
  """The `JudgeRun` in a chat-completions response body (decoded JSON).

  Raises:
    JudgeOutputError: no call of `evaluate_process_reward`, arguments that are not a JSON
      object, or arguments that fail `judge_run_from_arguments`.
  """
  try:
    message = completion["choices"][0]["message"]
  except (KeyError, IndexError, TypeError):
    raise JudgeOutputError(f"expected a chat completion with choices[0].message, found"
                           f" {describe(completion)}") from None
  calls = message.get("tool_calls") if isinstance(message, dict) else None
  if not isinstance(calls, list) or not calls:
    raise JudgeOutputError(f"expected a call of {FUNCTION_NAME}, found no tool call"
                           f" (content {describe(message.get('content') if isinstance(message, dict) else message)})")
  function = calls[0].get("function") if isinstance(calls[0], dict) else None
  if not isinstance(function, dict) or function.get("name") != FUNCTION_NAME:
    name = function.get("name") if isinstance(function, dict) else None
    raise JudgeOutputError(f"expected a call of {FUNCTION_NAME}, found a call of {describe(name)}")
  arguments = function.get("arguments")
  if isinstance(arguments, str):
    try:
      arguments = json.loads(arguments)
    except json.JSONDecodeError as e:
      raise JudgeOutputError(f"arguments: expected a JSON object, found invalid JSON ({e.msg} at"
                             f" column {e.colno}): {describe(function.get('arguments'))}") from None
  return judge_run_from_arguments(arguments, num_steps)


def judge_run_from_arguments(arguments: Any, num_steps: int) -> JudgeRun:
  """The run from the decoded `evaluate_process_reward` arguments (extra keys are ignored)."""
  if not isinstance(arguments, dict):
    raise JudgeOutputError(f"arguments: expected a JSON object, found {describe(arguments)}")
  succeeded = _scores(arguments, "succeed_tool_calling", num_steps, high=1)
  contributions = _scores(arguments, "contribution_to_final_answer", num_steps, high=MAX_CONTRIBUTION)
  if "final_answer_status" not in arguments:
    raise JudgeOutputError("final_answer_status: expected one of Solved, Unsure, Unsolved, found it missing")
  status = arguments["final_answer_status"]
  if not isinstance(status, str) or status.strip() not in STATUSES:
    raise JudgeOutputError(f"final_answer_status: expected one of Solved, Unsure, Unsolved, found {describe(status)}")
  return JudgeRun(succeed_tool_calling=succeeded, contributions=contributions,
                  status=AnswerStatus(status.strip()))


def _scores(arguments: dict[str, Any], key: str, num_steps: int, *, high: int) -> tuple[int, ...]:
  if key not in arguments:
    raise JudgeOutputError(f"{key}: expected a list of {num_steps} integers 0..{high}, found it missing")
  values = arguments[key]
  if not isinstance(values, list):
    raise JudgeOutputError(f"{key}: expected a list of {num_steps} integers 0..{high}, found {describe(values)}")
  if len(values) != num_steps:
    raise JudgeOutputError(f"{key}: expected {num_steps} entries (one per intermediate step), found {len(values)}")
  scores = []
  for i, value in enumerate(values):
    # bool is an int in Python; a judge writing true/false did not follow the schema.
    integral = (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer())
    if not integral or not 0 <= value <= high:
      raise JudgeOutputError(f"{key}[{i}]: expected an integer 0..{high}, found {describe(value)}")
    scores.append(int(value))
  return tuple(scores)
