"""Where a generated action ends, and which of its final tokens belong to it.

A policy writing in a chat template ends its action in one of three ways:

- an EOS id (a model fine-tuned with `eos_after_actions` writes one after every action);
- the template's end-of-action marker (`<|im_end|>` for Qwen2 and SmolLM2, `<|eot_id|>` for
  Llama 3.1; ToolLLaMA's is a plain newline, which also occurs inside an action, so it cannot
  stop anything);
- the header of another turn (`Function:\\n`, `<|im_start|>`, ...): the model has finished
  its action and is now writing the tool's answer itself.

The first two are part of the action (the renderer puts them there; the policy is trained
to write them). A turn header is not: the environment writes the next turn, so those tokens
are cut off (unless the action is nothing else: then the header stays as its one token, so
the step still has a token to carry its reward). An action that hits none of them within `max_new_tokens` keeps every token and
is usually malformed, which the environment answers with an error observation.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from steptool_jax.data.render import chat_format

# Why a generated action ended.
EOS = "eos"  # an EOS id or the template's end-of-action marker (kept in the action)
TURN = "turn"  # the header of another turn (cut off)
LENGTH = "length"  # max_new_tokens reached
SCRIPTED = "scripted"  # a scripted policy wrote the text


@dataclasses.dataclass(frozen=True)
class ActionStops:
  """Token sequences that end an action.

  `ends` finish the action and stay in it (EOS ids, the end-of-action marker); `turns`
  start another turn and are cut off. Each is a tuple of token-id sequences.
  """

  ends: tuple[tuple[int, ...], ...]
  turns: tuple[tuple[int, ...], ...]

  def __post_init__(self):
    if any(len(s) == 0 for s in self.ends + self.turns):
      raise ValueError("stop sequences: expected non-empty token sequences")

  @property
  def stop_ids(self) -> tuple[int, ...]:
    """Single-token stops, for `SamplingConfig.eos_ids` (checked without a sequence match)."""
    return tuple(sorted({s[0] for s in self.ends + self.turns if len(s) == 1}))

  @property
  def stop_sequences(self) -> tuple[tuple[int, ...], ...]:
    """Multi-token stops, for `SamplingConfig.stop_sequences`."""
    return tuple(s for s in self.ends + self.turns if len(s) > 1)


def turn_headers(template: str) -> tuple[str, ...]:
  """The texts that open a turn in `template`: the role-independent prefix of the opening
  when there is one (`<|im_start|>`), else the opening of every role (`Function:\\n`)."""
  fmt = chat_format(template)
  prefix = fmt.opening.split("{role}")[0]
  if prefix:
    return (prefix,)
  return tuple(dict.fromkeys(fmt.opening.format(role=role) for role in fmt.roles.values()))


def action_stops(tokenizer: Any, template: str, eos_ids: Sequence[int] = ()) -> ActionStops:
  """The stops of `template` as `tokenizer` encodes them, plus `eos_ids` (default: the
  tokenizer's EOS)."""
  eos_ids = tuple(eos_ids) or ((tokenizer.eos_token_id,) if tokenizer.eos_token_id is not None else ())
  ends = [(int(i),) for i in eos_ids]
  marker = chat_format(template).action_end
  if marker.strip():  # a bare newline (ToolLLaMA) also appears inside actions
    ends.append(tuple(tokenizer.encode(marker, add_special_tokens=False)))
  turns = [tuple(tokenizer.encode(header, add_special_tokens=False)) for header in turn_headers(template)]
  return ActionStops(ends=tuple(dict.fromkeys(ends)), turns=tuple(dict.fromkeys(turns)))


def _ends_with(tokens: Sequence[int], sequence: Sequence[int]) -> bool:
  return len(tokens) >= len(sequence) and tuple(tokens[len(tokens) - len(sequence):]) == tuple(sequence)


@dataclasses.dataclass(frozen=True)
class ActionCut:
  """How a generated row splits: its first `length` tokens are the action, of which the
  last `end_length` are the end marker (EOS or the template's), and why it ended."""

  length: int
  end_length: int
  stop: str


def split_action(tokens: Sequence[int], stopped: bool, stops: ActionStops) -> ActionCut:
  """Splits one generated row.

  `tokens` are the row's generated tokens (up to its length, stop tokens included);
  `stopped` says whether generation stopped on a stop rather than the token limit.
  """
  if stopped:
    for turn in sorted(stops.turns, key=len, reverse=True):
      if _ends_with(tokens, turn):
        if len(tokens) == len(turn):  # nothing but a header: keep it, so the step has a token
          return ActionCut(len(tokens), len(turn), TURN)  # to carry its reward and be trained on
        return ActionCut(len(tokens) - len(turn), 0, TURN)
    for end in sorted(stops.ends, key=len, reverse=True):
      if _ends_with(tokens, end):
        return ActionCut(len(tokens), len(end), EOS)
  return ActionCut(len(tokens), 0, LENGTH)


def cut_at_turn_header(text: str, template: str) -> str:
  """`text` up to the first turn header written at a line start.

  The token-level stop misses a header the tokenizer spells differently in context (a
  SentencePiece `▁Function`); the environment should still not read a hallucinated
  observation as part of the action.
  """
  cut = len(text)
  for header in turn_headers(template):
    at = 0
    while (at := text.find(header, at)) >= 0:
      if at == 0 or text[at - 1] == "\n":
        cut = min(cut, at)
        break
      at += 1
  return text[:cut]
