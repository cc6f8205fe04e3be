"""Parsing and writing actions in the ReAct form of ToolBench data.

An action is `Thought: ...` (optional), `Action: <function name>`, `Action Input: <JSON
object>`. The parser never raises: whatever a model writes, it returns a `ParsedAction`
whose `error` says what is wrong (empty when the action is well formed), so the episode
can answer it with an error observation.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

MAX_ACTION_CHARS = 4096
MAX_ARGUMENT_CHARS = 1024

_ACTION = re.compile(r"^[ \t]*Action[ \t]*:[ \t]*(?P<name>[^\n]*)$", re.MULTILINE)
_ACTION_INPUT = re.compile(r"^[ \t]*Action[ \t]+Input[ \t]*:", re.MULTILINE)
_THOUGHT = re.compile(r"^[ \t]*Thought[ \t]*:", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class ParsedAction:
  """What could be read from one action text.

  `arguments_text` is the JSON as written (only the object itself: text after it, such as
  a hallucinated observation, is dropped); `arguments` is its parsed value or None.
  """

  thought: str
  name: str
  arguments_text: str
  arguments: Any
  error: str

  @property
  def ok(self) -> bool:
    return not self.error


def _clip(text: str, limit: int) -> str:
  return text if len(text) <= limit else text[:limit]


def parse_action(text: str, *, max_action_chars: int = MAX_ACTION_CHARS,
                 max_argument_chars: int = MAX_ARGUMENT_CHARS) -> ParsedAction:
  """Reads `Thought / Action / Action Input` from a model's action text."""
  if not isinstance(text, str):
    return ParsedAction("", "", "", None, f"expected the action as text, got {type(text).__name__}")
  if len(text) > max_action_chars:
    return ParsedAction("", "", "", None,
                        f"the action is longer than {max_action_chars} characters ({len(text)})")
  action = _ACTION.search(text)
  if action is None:
    return ParsedAction(text.strip(), "", "", None,
                        "expected a line 'Action: <function name>' followed by 'Action Input: {...}'")
  before = text[:action.start()]
  thought_mark = _THOUGHT.search(before)
  thought = (before[thought_mark.end():] if thought_mark else before).strip()
  name = action.group("name").strip()
  if not name:
    return ParsedAction(thought, "", "", None, "the 'Action:' line names no function")
  rest = text[action.end():]
  action_input = _ACTION_INPUT.search(rest)
  if action_input is None:
    return ParsedAction(thought, name, "", None,
                        "expected a line 'Action Input: {...}' with the arguments as a JSON object")
  raw = rest[action_input.end():].lstrip()
  if not raw:
    return ParsedAction(thought, name, "", None, "'Action Input:' is empty; expected a JSON object")
  try:
    arguments, end = json.JSONDecoder().raw_decode(raw[:max_argument_chars + 1])
  except (ValueError, RecursionError) as e:
    if len(raw) > max_argument_chars:
      return ParsedAction(thought, name, _clip(raw.rstrip(), max_argument_chars), None,
                          f"the Action Input is longer than {max_argument_chars} characters")
    return ParsedAction(thought, name, raw.rstrip(), None, f"the Action Input is not valid JSON: {e}")
  arguments_text = raw[:end]
  if len(arguments_text) > max_argument_chars:
    return ParsedAction(thought, name, _clip(arguments_text, max_argument_chars), None,
                        f"the Action Input is longer than {max_argument_chars} characters")
  if not isinstance(arguments, dict):
    return ParsedAction(thought, name, arguments_text, None,
                        f"the Action Input must be a JSON object, found {type(arguments).__name__}")
  return ParsedAction(thought, name, arguments_text, arguments, "")


def format_arguments(arguments: dict[str, Any]) -> str:
  """The JSON text of a well-formed call (compact, UTF-8 kept as is)."""
  return json.dumps(arguments, ensure_ascii=False)


def format_action(name: str, arguments_text: str, thought: str = "") -> str:
  """An action text in the form the renderers give ToolLLaMA responses."""
  head = f"Thought: {thought}\n" if thought else ""
  return f"{head}Action: {name}\nAction Input: {arguments_text}\n"
