"""Rule-based step annotation (no LLM): SuccCalling, Contribution, IsSolved.

SuccCalling reads the ToolBench observation envelope `{"error": "...", "response": ...}`:
a non-empty `error` fails the call; a dict response with `status` 400 fails it; a string
response fails when it contains "wrong", "error" or "is empty" (any case) or starts with
"Please" (tools that answer with instructions did not run). One addition to those rules:
an empty response (empty string or null) fails too, since it carries nothing (the judges
of the reference annotations score such a step 0 in every run). A string response that is
itself a JSON object (ToolBench often double-encodes) is checked as that object as well.
Text that is not an envelope at all is checked as a string response.

Long observations are often stored cut short with `...` (invalid JSON); the envelope is
then read from its prefix: the error text, and the payload as a string (when it opens with
a quote) or as a truncated structure whose visible top-level `"status"` is still checked.

Contribution is 1 when the word-level longest common subsequence of the response payload
and the final answer covers at least `threshold` of the payload's words (see `lcs.py` for
why words).

Step rewards follow the paper's normalisation with a binary Contribution:
`r_t = (alpha * SC_t + Con_t) / (alpha + 1)`, and the final step gets IsSolved.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from steptool_jax.data.records import AnswerStatus, Trajectory
from steptool_jax.rewards.lcs import lcs_coverage
from steptool_jax.rewards.shaping import step_reward

FAILURE_PHRASES = ("wrong", "error", "is empty")
FAILURE_PREFIX = "Please"
_ENVELOPE_PREFIX = re.compile(r'\s*\{\s*"error"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"response"\s*:\s*(.*)', re.DOTALL)
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
_STATUS_400 = re.compile(r'"status"\s*:\s*"?400\b')


@dataclasses.dataclass(frozen=True)
class TruncatedPayload:
  """A structured (object or list) payload whose JSON text was cut short."""

  text: str


def succ_calling(response: str) -> int:
  """1 when the tool call succeeded judging by its ToolBench envelope, else 0."""
  error, payload = parse_envelope(response)
  if error:
    return 0
  return int(_payload_ok(payload))


def contribution(response: str, final_answer: str, *, threshold: float = 0.3) -> int:
  """1 when the LCS of response and final answer covers >= threshold of the response."""
  if not 0 <= threshold <= 1:
    raise ValueError(f"threshold: expected a fraction in [0, 1], found {threshold}")
  _, payload = parse_envelope(response)
  return int(lcs_coverage(payload_text(payload), final_answer) >= threshold)


def annotate_by_rules(trajectory: Trajectory, is_solved: AnswerStatus | float, *, alpha: float = 1.0,
                      threshold: float = 0.3) -> tuple[float, ...]:
  """Step rewards (intermediate ones, then the final IsSolved one) for one trajectory.

  `is_solved` is the verdict on the final answer, or an already averaged final reward in
  [0, 1] (e.g. the mean over judge runs of an existing annotation). A trajectory without a
  Finish call has no final step; its intermediate calls then contribute to an empty answer.
  """
  final = trajectory.final_answer
  answer_text = final.final_answer if final is not None else ""
  rewards = tuple(
      step_reward(succ_calling(call.response), contribution(call.response, answer_text, threshold=threshold),
                  alpha=alpha, contribution_scale=1)
      for call in trajectory.calls)
  if trajectory.finish is None:
    return rewards
  final_reward = is_solved.reward if isinstance(is_solved, AnswerStatus) else float(is_solved)
  if not 0 <= final_reward <= 1:
    raise ValueError(f"is_solved: expected a status or a reward in [0, 1], found {is_solved!r}")
  return rewards + (final_reward,)


def parse_envelope(response: str) -> tuple[str, Any]:
  """(error text, payload) of a ToolBench observation; raw text is its own payload.

  The payload is the parsed JSON value, or for a truncated envelope the visible text
  (a `str` for string payloads, a `TruncatedPayload` for structured ones).
  """
  try:
    envelope = json.loads(response)
  except (ValueError, RecursionError):
    return _parse_truncated_envelope(response)
  if isinstance(envelope, dict) and ("error" in envelope or "response" in envelope):
    error = envelope.get("error") or ""
    return (error if isinstance(error, str) else json.dumps(error)).strip(), envelope.get("response")
  return "", envelope


def payload_text(payload: Any) -> str:
  """The payload as the text an answer could quote (JSON for structured payloads)."""
  if payload is None:
    return ""
  if isinstance(payload, str):
    return payload
  if isinstance(payload, TruncatedPayload):
    return payload.text
  return json.dumps(payload, ensure_ascii=False)


def _parse_truncated_envelope(response: str) -> tuple[str, Any]:
  match = _ENVELOPE_PREFIX.fullmatch(response)
  if match is None:
    return "", response
  error = _unescape(match.group(1)).strip()
  rest = match.group(2).rstrip()
  if rest.startswith('"'):
    return error, _unescape(rest[1:].removesuffix('"}'))
  if rest.startswith(("{", "[")):
    return error, TruncatedPayload(_unescape(rest))
  return error, rest


def _unescape(fragment: str) -> str:
  """Decodes JSON string escapes in a fragment that may be cut anywhere."""
  def decode(match: re.Match[str]) -> str:
    code = match.group(1)
    if code.startswith("u") and len(code) == 5:
      return chr(int(code[1:], 16))
    return _SIMPLE_ESCAPES.get(code, code)
  return _ESCAPE.sub(decode, fragment)


def _payload_ok(payload: Any) -> bool:
  if payload is None:
    return False
  if isinstance(payload, TruncatedPayload):
    return _STATUS_400.search(payload.text) is None
  if isinstance(payload, dict):
    return str(payload.get("status", "")).strip() != "400"
  if not isinstance(payload, str):
    return True
  if not payload.strip():
    return False
  lowered = payload.lower()
  if any(phrase in lowered for phrase in FAILURE_PHRASES) or payload.lstrip().startswith(FAILURE_PREFIX):
    return False
  if payload.lstrip().startswith("{"):
    try:
      inner = json.loads(payload)
    except (ValueError, RecursionError):
      return True
    if isinstance(inner, dict):
      return _payload_ok(inner)
  return True
