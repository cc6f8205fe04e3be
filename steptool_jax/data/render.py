"""Rendering trajectories and conversations into the prompt formats of the model families
StepTool trains: ToolLLaMA, Qwen2 (ChatML, also SmolLM2's) and Llama 3.1.

Every format is a sequence of turns; the renderer splits it into segments
`(text, is_assistant_action)` so that the tokeniser can mark exactly the action tokens:

- `toolllama`: `Role:\\n{content}\\n` with roles System/User/Assistant/Function, the form of
  the published `toolllama_step_grained_for_ppo.tsv` (reproduced exactly).
- `qwen2`: ChatML, `<|im_start|>{role}\\n{content}<|im_end|>\\n`; tool output uses the
  `tool` role. This is also SmolLM2-Instruct's chat template (it passes any role through and
  adds a default system turn only when there is none; ours always has one):
  tests/data/test_render.py checks an environment episode against its `apply_chat_template`
  token for token, so SmolLM2 uses this format under the same name.
- `llama3`: Llama 3.1 headers, `<|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>`;
  tool output uses the `ipython` role (Meta's role for tool results). `<|begin_of_text|>` is
  not rendered: it is the tokenizer's BOS and the tokeniser adds it (see `tokenize.py`).

The end-of-turn marker of an assistant turn (`<|im_end|>`, `<|eot_id|>`, the newline for
ToolLLaMA) belongs to the action, so a policy trained on it learns to end its turn.
ToolBench's SFT data starts user and assistant texts with a newline; one leading newline
is dropped from every turn so the same turn renders identically from either source.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from steptool_jax.data.records import Conversation, ToolCall, Trajectory, Turn

TEMPLATES = ("toolllama", "qwen2", "llama3")


@dataclasses.dataclass(frozen=True)
class ChatFormat:
  """How one model family marks up a turn."""

  roles: Mapping[str, str]  # ToolBench role -> the family's role name
  opening: str  # before the content; `{role}` is replaced
  closing: str  # after the content of a non-assistant turn
  action_end: str  # after the content of an assistant turn, part of the action
  after_action: str  # non-action text that follows the action


FORMATS: Mapping[str, ChatFormat] = {
    "toolllama": ChatFormat(
        roles={"system": "System", "user": "User", "assistant": "Assistant", "function": "Function"},
        opening="{role}:\n", closing="\n", action_end="\n", after_action=""),
    "qwen2": ChatFormat(
        roles={"system": "system", "user": "user", "assistant": "assistant", "function": "tool"},
        opening="<|im_start|>{role}\n", closing="<|im_end|>\n", action_end="<|im_end|>", after_action="\n"),
    "llama3": ChatFormat(
        roles={"system": "system", "user": "user", "assistant": "assistant", "function": "ipython"},
        opening="<|start_header_id|>{role}<|end_header_id|>\n\n", closing="<|eot_id|>",
        action_end="<|eot_id|>", after_action=""),
}


def render_steps(trajectory: Trajectory, template: str, *, system_prompt: str | None = None
                 ) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(prompts, responses), one of each per step: prompts[i] is the text shown before action i
  (for i=0 the system+user preamble, for i>0 the previous observation and the assistant
  header); responses[i] is the assistant action text (Thought/Action/Action Input)."""
  segments = render_conversation(trajectory_conversation(trajectory, system_prompt=system_prompt), template)
  prompts, responses = [], []
  pending = ""
  for text, is_action in segments:
    if is_action:
      prompts.append(pending)
      responses.append(text)
      pending = ""
    else:
      pending += text
  return tuple(prompts), tuple(responses)  # text after the last action is no step's context


def render_conversation(conversation: Conversation, template: str) -> tuple[tuple[str, bool], ...]:
  """Segments `(text, is_assistant_action)` in order; concatenated they are the full dialogue.
  Consecutive non-action texts are merged, so segments alternate."""
  fmt = chat_format(template)
  segments: list[tuple[str, bool]] = []

  def add(text: str, is_action: bool) -> None:
    if not text:
      return
    if segments and not is_action and not segments[-1][1]:
      segments[-1] = (segments[-1][0] + text, False)
    else:
      segments.append((text, is_action))

  for turn in conversation.turns:
    opening = fmt.opening.format(role=fmt.roles[turn.role])
    content = _strip_one_newline(turn.content)
    if turn.role == "assistant":
      add(opening, False)
      add(content + fmt.action_end, True)
      add(fmt.after_action, False)
    else:
      add(opening + content + fmt.closing, False)
  return tuple(segments)


def trajectory_conversation(trajectory: Trajectory, *, system_prompt: str | None = None) -> Conversation:
  """The dialogue of a trajectory: system, user query, then action / observation turns."""
  turns = [Turn("system", default_system_prompt(trajectory) if system_prompt is None else system_prompt),
           Turn("user", f"{trajectory.query}\nBegin!\n")]
  for call in trajectory.calls:
    turns.append(Turn("assistant", action_text(call)))
    turns.append(Turn("function", call.response))
  if trajectory.finish is not None:
    turns.append(Turn("assistant", action_text(trajectory.finish)))
  return Conversation(id=trajectory.query_id, query_id=trajectory.query_id, turns=tuple(turns))


def default_system_prompt(trajectory: Trajectory) -> str:
  """The short system text of the published step-grained TSV (tool names only)."""
  return f"Specifically, you have access to the following APIs: {list(trajectory.tool_names)!r}"


def action_text(call: ToolCall) -> str:
  """`Thought: ...` (when there is one), `Action: name`, `Action Input: arguments`."""
  thought = f"Thought: {call.thought}\n" if call.thought else ""
  return f"{thought}Action: {call.name}\nAction Input: {call.arguments}"


def chat_format(template: str) -> ChatFormat:
  if template not in FORMATS:
    raise ValueError(f"template: expected one of {', '.join(TEMPLATES)}, found {template!r}")
  return FORMATS[template]


def _strip_one_newline(text: str) -> str:
  return text[1:] if text.startswith("\n") else text
