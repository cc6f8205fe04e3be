"""Rendering trajectories into the prompt formats of ToolLLaMA, Qwen2 and Llama 3.1.

INTERFACE STUB: implemented by the foundation work; signatures are the contract.
"""

from __future__ import annotations

from steptool_jax.data.records import Conversation, Trajectory

TEMPLATES = ("toolllama", "qwen2", "llama3")


def render_steps(trajectory: Trajectory, template: str, *, system_prompt: str | None = None
                 ) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(prompts, responses), one of each per step: prompts[i] is the text shown before action i
  (for i=0 the system+user preamble, for i>0 the previous observation and the assistant
  header); responses[i] is the assistant action text (Thought/Action/Action Input)."""
  raise NotImplementedError


def render_conversation(conversation: Conversation, template: str) -> tuple[tuple[str, bool], ...]:
  """Segments `(text, is_assistant_action)` in order; concatenated they are the full dialogue."""
  raise NotImplementedError
