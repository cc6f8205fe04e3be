"""Tokenising step-grained rows and SFT conversations into numpy token arrays.

A row alternates context and action segments, `prompt_1 action_1 ... prompt_T action_T`.
Each segment is tokenised on its own (`add_special_tokens=False`), as the original does,
so a token never straddles a segment boundary and the action mask is exact. Then:

- BOS: with `add_bos` the tokenizer's BOS id is put at position 0 and kept there through
  truncation. It is explicit because chat formats differ (Llama has `<|begin_of_text|>`,
  Qwen2 has no BOS at all: use `add_bos=False`).
- EOS: with `eos_after_actions` the EOS id is appended to every action segment, so a
  policy sampling in the ToolLLaMA text format learns to stop after an action. Default
  off: the Qwen2 and Llama 3.1 renderings already end each action with their end-of-turn
  token, and the published ToolLLaMA data has no EOS in its actions.
- Truncation: the context (everything before the last action, BOS included) is cut from
  the left to `max_context_len`; the last action is cut from the right to
  `max_response_len` (an appended EOS counts as part of it). An earlier action that loses
  all its tokens is a dropped step: its reward slot stays but lands on no token.
- Position 0 is never an action token (it has no predecessor to be predicted from, see
  docs/conventions.md); an action token landing there is unmasked.

The per-token arrays follow docs/conventions.md: `input_ids`, `action_mask` (1 on action
tokens), `step_ids` (step index on action tokens, -1 elsewhere).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from steptool_jax.data.records import Conversation, StepGrainedRow
from steptool_jax.data.render import render_conversation


@dataclasses.dataclass(frozen=True)
class PackedSequence:
  """Token arrays of one sequence plus what truncation cost."""

  input_ids: np.ndarray  # int32 [L]
  action_mask: np.ndarray  # int32 [L]
  step_ids: np.ndarray  # int32 [L]
  num_actions: int  # action segments before truncation
  context_tokens_dropped: int
  response_tokens_dropped: int
  steps_dropped: int  # action segments with no token left


@dataclasses.dataclass(frozen=True)
class TokenizedExample:
  """One step-grained row, tokenised."""

  input_ids: np.ndarray  # int32 [L]
  action_mask: np.ndarray  # int32 [L]
  step_ids: np.ndarray  # int32 [L]
  step_rewards: np.ndarray  # float32 [num_steps]
  num_steps: int
  context_tokens_dropped: int
  response_tokens_dropped: int
  steps_dropped: int

  def features(self) -> dict[str, Any]:
    """The example as a flat dict (the row layout of the cached dataset)."""
    return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class TokenizedConversation:
  """One SFT conversation, tokenised; the loss goes where `loss_mask` is 1."""

  input_ids: np.ndarray  # int32 [L]
  loss_mask: np.ndarray  # int32 [L], 1 on assistant-action tokens
  context_tokens_dropped: int
  response_tokens_dropped: int
  turns_dropped: int  # assistant turns cut away entirely

  def features(self) -> dict[str, Any]:
    return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


def special_token_ids(tokenizer: Any, *, add_bos: bool, eos_after_actions: bool) -> tuple[int | None, int | None]:
  """(bos_id, eos_id) to insert, or None where the option is off."""
  bos_id = eos_id = None
  if add_bos:
    bos_id = tokenizer.bos_token_id
    if bos_id is None:
      raise ValueError("add_bos: the tokenizer has no BOS token (Qwen2 has none); set add_bos=False")
  if eos_after_actions:
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
      raise ValueError("eos_after_actions: the tokenizer has no EOS token; set eos_after_actions=False")
  return bos_id, eos_id


def pack_segments(segments: Sequence[Sequence[int]], is_action: Sequence[bool], *, max_context_len: int,
                  max_response_len: int, bos_id: int | None = None, eos_id: int | None = None) -> PackedSequence:
  """Concatenates tokenised segments, marks actions and applies the truncation rules.

  Segments after the last action are dropped (no action follows them to learn from).
  """
  if max_context_len < 1:
    raise ValueError(f"max_context_len: expected >= 1, found {max_context_len}")
  if max_response_len < 1:
    raise ValueError(f"max_response_len: expected >= 1, found {max_response_len}")
  if len(segments) != len(is_action):
    raise ValueError(f"expected one is_action flag per segment, found {len(is_action)} for {len(segments)}")
  action_positions = [i for i, flag in enumerate(is_action) if flag]
  if not action_positions:
    raise ValueError("expected at least one action segment, found none")
  last = action_positions[-1]
  pieces = [np.asarray(segment, dtype=np.int32) for segment in segments[:last + 1]]
  if eos_id is not None:
    pieces = [np.append(piece, np.int32(eos_id)) if is_action[i] else piece for i, piece in enumerate(pieces)]
  lengths = np.array([len(piece) for piece in pieces], dtype=np.int64)
  flags = np.array(is_action[:last + 1], dtype=bool)
  segment_step = np.where(flags, np.cumsum(flags) - 1, -1).astype(np.int32)

  context_ids = np.concatenate(pieces[:last] + [np.zeros(0, np.int32)])
  context_steps = np.repeat(segment_step[:last], lengths[:last])
  prefix = np.zeros(0, np.int32) if bos_id is None else np.array([bos_id], np.int32)
  room = max_context_len - len(prefix)  # >= 0: the BOS alone always fits
  context_dropped = max(0, len(context_ids) - room)
  context_ids = context_ids[context_dropped:]
  context_steps = context_steps[context_dropped:]

  response = pieces[last]
  response_ids = response[:max_response_len]
  step_ids = np.concatenate([np.full(len(prefix), -1, np.int32), context_steps,
                             np.full(len(response_ids), segment_step[last], np.int32)])
  if not len(step_ids):
    raise ValueError("expected at least one token, found an empty context and an empty last action")
  step_ids[0] = -1  # position 0 is never an action (it has no predecessor)
  input_ids = np.concatenate([prefix, context_ids, response_ids])
  surviving = np.unique(step_ids[step_ids >= 0])
  return PackedSequence(
      input_ids=input_ids,
      action_mask=(step_ids >= 0).astype(np.int32),
      step_ids=step_ids,
      num_actions=len(action_positions),
      context_tokens_dropped=int(context_dropped),
      response_tokens_dropped=int(len(response) - len(response_ids)),
      steps_dropped=len(action_positions) - len(surviving))


def tokenize_rows(rows: Sequence[StepGrainedRow], tokenizer: Any, *, max_context_len: int, max_response_len: int,
                  add_bos: bool = True, eos_after_actions: bool = False) -> list[TokenizedExample]:
  """Tokenises many rows with one batched tokenizer call (the fast path)."""
  bos_id, eos_id = special_token_ids(tokenizer, add_bos=add_bos, eos_after_actions=eos_after_actions)
  texts = [text for row in rows for pair in zip(row.prompts, row.responses) for text in pair]
  encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
  examples = []
  start = 0
  for row in rows:
    count = 2 * row.num_steps
    packed = pack_segments(encoded[start:start + count], [False, True] * row.num_steps,
                           max_context_len=max_context_len, max_response_len=max_response_len,
                           bos_id=bos_id, eos_id=eos_id)
    start += count
    examples.append(TokenizedExample(
        input_ids=packed.input_ids, action_mask=packed.action_mask, step_ids=packed.step_ids,
        step_rewards=np.asarray(row.rewards, dtype=np.float32), num_steps=row.num_steps,
        context_tokens_dropped=packed.context_tokens_dropped,
        response_tokens_dropped=packed.response_tokens_dropped, steps_dropped=packed.steps_dropped))
  return examples


def tokenize_row(row: StepGrainedRow, tokenizer: Any, *, max_context_len: int, max_response_len: int,
                 add_bos: bool = True, eos_after_actions: bool = False) -> TokenizedExample:
  """One step-grained row: `input_ids`, `action_mask`, `step_ids`, `step_rewards` and counters."""
  return tokenize_rows([row], tokenizer, max_context_len=max_context_len, max_response_len=max_response_len,
                       add_bos=add_bos, eos_after_actions=eos_after_actions)[0]


def tokenize_conversation(conversation: Conversation, template: str, tokenizer: Any, *, max_context_len: int,
                          max_response_len: int, add_bos: bool = True,
                          eos_after_actions: bool = False) -> TokenizedConversation:
  """An SFT conversation rendered in `template`: `input_ids` and `loss_mask` (1 on assistant
  actions), with the same truncation rules (the last assistant turn is the response)."""
  bos_id, eos_id = special_token_ids(tokenizer, add_bos=add_bos, eos_after_actions=eos_after_actions)
  segments = render_conversation(conversation, template)
  encoded = tokenizer([text for text, _ in segments], add_special_tokens=False)["input_ids"]
  packed = pack_segments(encoded, [flag for _, flag in segments], max_context_len=max_context_len,
                         max_response_len=max_response_len, bos_id=bos_id, eos_id=eos_id)
  return TokenizedConversation(
      input_ids=packed.input_ids, loss_mask=packed.action_mask,
      context_tokens_dropped=packed.context_tokens_dropped,
      response_tokens_dropped=packed.response_tokens_dropped, turns_dropped=packed.steps_dropped)
