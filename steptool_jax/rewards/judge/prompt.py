"""The judge prompt: a user-editable template filled with one trajectory.

The template is a text file with `string.Template` placeholders (write a literal dollar
sign as `$$`):

- `$query`: the user's request;
- `$steps`: one line per intermediate tool call, `Step i: {'name': ..., 'arguments': ...,
  'response': ...}` (Finish excluded), responses cut to `max_response_chars`. The dict is
  written as a Python literal, the form of the original annotation files: the JSON inside
  arguments and responses then reads without a layer of escaped quotes;
- `$final_answer`: the text of the Finish call, or a note that the agent gave up or never
  finished;
- `$num_steps`: the number of intermediate steps (how long both score lists must be).

The packaged `prompt.txt` states the paper's three rules (SuccCalling, Contribution 0-5,
Solved/Unsure/Unsolved) in our own words.
"""

from __future__ import annotations

import importlib.resources
import string

from steptool_jax.data.errors import DataError
from steptool_jax.data.files import read_utf8_text
from steptool_jax.data.records import ToolCall, Trajectory

REQUIRED_FIELDS = frozenset({"query", "steps", "final_answer"})
OPTIONAL_FIELDS = frozenset({"num_steps"})
NO_STEPS = "(none: the assistant called no tool before answering)"
NO_FINISH = "(none: the episode ended without a final answer)"
GAVE_UP = "(none: the assistant gave up without answering)"


def load_prompt_template(path: str | None = None) -> string.Template:
  """The template at `path`, or the packaged one.

  Raises:
    DataError: the file is unreadable, lacks a required placeholder or has an unknown one.
  """
  if path is None:
    text = importlib.resources.files(__package__).joinpath("prompt.txt").read_text(encoding="utf-8")
    where = "steptool_jax/rewards/judge/prompt.txt"
  else:
    text = read_utf8_text(path, expected="judge prompt template")
    where = path
  template = string.Template(text)
  if not template.is_valid():
    raise DataError(where, None, "template", "expected $name placeholders and $$ for a literal dollar,"
                    " found a stray $")
  fields = set(template.get_identifiers())
  unknown = sorted(fields - REQUIRED_FIELDS - OPTIONAL_FIELDS)
  if unknown:
    raise DataError(where, None, "template", f"expected only the placeholders"
                    f" {', '.join(sorted(REQUIRED_FIELDS | OPTIONAL_FIELDS))}, found ${unknown[0]}")
  missing = sorted(REQUIRED_FIELDS - fields)
  if missing:
    raise DataError(where, None, "template", f"expected a ${missing[0]} placeholder, found none")
  return template


def render_judge_prompt(template: string.Template, trajectory: Trajectory, *, max_response_chars: int) -> str:
  """The prompt for one trajectory."""
  steps = "\n".join(format_step(i + 1, call, max_response_chars=max_response_chars)
                    for i, call in enumerate(trajectory.calls))
  return template.substitute(query=trajectory.query, steps=steps or NO_STEPS,
                             final_answer=final_answer_text(trajectory), num_steps=len(trajectory.calls))


def format_step(number: int, call: ToolCall, *, max_response_chars: int) -> str:
  """`Step i: {'name': ..., 'arguments': ..., 'response': ...}` (a Python-literal dict)."""
  response = call.response
  if len(response) > max_response_chars:
    response = response[:max_response_chars] + "..."
  fields = {"name": call.name, "arguments": call.arguments, "response": response}
  return f"Step {number}: {fields!r}"


def final_answer_text(trajectory: Trajectory) -> str:
  final = trajectory.final_answer
  if final is None:
    return NO_FINISH
  if final.gave_up:
    return GAVE_UP
  return final.final_answer
