"""Typed records for everything StepTool reads and writes.

One step of a tool-use trajectory is an assistant action (a tool call, or the final
`Finish` call) followed by the environment's observation. The records below are what
the readers in this package return and what the writers, the reward annotators, the
renderers and the built-in environment exchange. They are frozen dataclasses of plain
Python values; arrays appear only after tokenisation (`steptool_jax.data.tokenize`).
"""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any, Mapping

from steptool_jax.data.errors import describe, short_repr

FINISH = "Finish"
GIVE_ANSWER = "give_answer"
GIVE_UP = "give_up_and_restart"


class AnswerStatus(enum.Enum):
  """The judge's verdict on the final answer (the paper's IsSolved)."""

  SOLVED = "Solved"
  UNSURE = "Unsure"
  UNSOLVED = "Unsolved"

  @property
  def reward(self) -> float:
    """Solved 1, Unsure 0.5, Unsolved 0 (paper, Sec. 3.1)."""
    return {"Solved": 1.0, "Unsure": 0.5, "Unsolved": 0.0}[self.value]

  @classmethod
  def parse(cls, text: str) -> "AnswerStatus":
    """Accepts `Solved` and the original files' `AnswerStatus.Solved` spelling.

    Raises:
      ValueError: for anything else (callers wrap it into a `DataError`).
    """
    if not isinstance(text, str):
      raise ValueError(f"expected a string status, found {describe(text)}")
    name = text.strip()
    if name.startswith("AnswerStatus."):
      name = name[len("AnswerStatus."):]
    for status in cls:
      if status.value == name:
        return status
    raise ValueError(
        f"expected one of Solved, Unsure, Unsolved (optionally prefixed by"
        f" 'AnswerStatus.'), found {short_repr(text)}")


@dataclasses.dataclass(frozen=True)
class ToolSpec:
  """One function the agent may call, in OpenAI function-calling form."""

  name: str
  description: str = ""
  parameters: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def to_openai(self) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": self.name,
            "description": self.description,
            "parameters": dict(self.parameters),
        },
    }


@dataclasses.dataclass(frozen=True)
class ToolCall:
  """One assistant action and what the environment answered.

  `arguments` is the JSON text the agent wrote (kept verbatim: it may be invalid
  JSON, which is itself a failed call). `response` is the observation text, for
  ToolBench tools the envelope `{"error": "...", "response": ...}` serialised as
  JSON. `thought` is the optional free-text reasoning before the action.
  """

  name: str
  arguments: str
  response: str = ""
  thought: str = ""

  def parsed_arguments(self) -> Any:
    """The arguments as JSON, or None if they do not parse."""
    try:
      return json.loads(self.arguments) if self.arguments.strip() else {}
    except (json.JSONDecodeError, ValueError):
      return None


@dataclasses.dataclass(frozen=True)
class FinalAnswer:
  """The arguments of the `Finish` call."""

  return_type: str
  final_answer: str = ""

  @property
  def gave_up(self) -> bool:
    return self.return_type != GIVE_ANSWER


@dataclasses.dataclass(frozen=True)
class Trajectory:
  """A tool-use episode in the ToolBench converted-answer sense.

  `calls` are the intermediate tool calls in order (Finish excluded); `finish`
  is the `Finish` call itself, or None when the episode ended without one
  (step limit reached). A trajectory has `len(calls) + (finish is not None)` steps.
  """

  query_id: str
  query: str
  tools: tuple[ToolSpec, ...]
  calls: tuple[ToolCall, ...]
  finish: ToolCall | None
  method: str = ""

  @property
  def num_steps(self) -> int:
    return len(self.calls) + (self.finish is not None)

  @property
  def tool_names(self) -> tuple[str, ...]:
    return tuple(tool.name for tool in self.tools)

  @property
  def final_answer(self) -> FinalAnswer | None:
    """The parsed `Finish` arguments (lenient: unparseable text counts as an answer)."""
    if self.finish is None:
      return None
    args = self.finish.parsed_arguments()
    if isinstance(args, dict):
      return FinalAnswer(
          return_type=str(args.get("return_type", GIVE_ANSWER)),
          final_answer=str(args.get("final_answer", "")))
    return FinalAnswer(return_type=GIVE_ANSWER, final_answer=self.finish.arguments)


@dataclasses.dataclass(frozen=True)
class JudgeRun:
  """One judge run over a trajectory: per intermediate step SuccCalling (0/1) and
  Contribution (0-5), and the status of the final answer."""

  succeed_tool_calling: tuple[int, ...]
  contributions: tuple[int, ...]
  status: AnswerStatus


@dataclasses.dataclass(frozen=True)
class RewardAnnotation:
  """Judge annotations of one trajectory (several runs), as in
  `reward_annotation_G123.json`."""

  query_id: str
  query: str
  tool_names: tuple[str, ...]
  calls: tuple[ToolCall, ...]
  finish: ToolCall | None
  runs: tuple[JudgeRun, ...]

  @property
  def num_steps(self) -> int:
    return len(self.calls) + (self.finish is not None)


@dataclasses.dataclass(frozen=True)
class StepGrainedRow:
  """One row of the step-grained TSV: `prompts[i]` is the context shown before
  action `responses[i]`; `rewards[i]` is that step's shaped reward (the last one is
  the final IsSolved reward)."""

  prompts: tuple[str, ...]
  responses: tuple[str, ...]
  rewards: tuple[float, ...]

  @property
  def num_steps(self) -> int:
    return len(self.responses)


@dataclasses.dataclass(frozen=True)
class Turn:
  """One turn of an SFT conversation."""

  role: str  # system | user | assistant | function
  content: str


ROLES = ("system", "user", "assistant", "function")


@dataclasses.dataclass(frozen=True)
class Conversation:
  """One SFT instance: a whole multi-turn dialogue; loss goes on assistant turns."""

  id: str
  query_id: str
  turns: tuple[Turn, ...]
