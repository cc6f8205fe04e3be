"""The token context a policy sees before each action of an episode.

An episode is kept as token segments `prompt_0, action_0, prompt_1, ...`: each prompt is
tokenised on its own (as `steptool_jax.data.tokenize` does), each action is the policy's
own tokens. The context for the next action is BOS + the segments so far, left-truncated
to `max_context_len` with the BOS kept: the rule the data pipeline applies to the context
of a training row, so a policy acts on the same tokens it is later trained on.
"""

from __future__ import annotations

from typing import Any, Sequence


def encode_texts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
  """Token ids of each text, without special tokens added (one batched tokenizer call)."""
  if not texts:
    return []
  return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def policy_context(segments: Sequence[Sequence[int]], *, bos_id: int | None, max_context_len: int) -> list[int]:
  """BOS + the concatenated segments, cut from the left to `max_context_len` tokens."""
  if max_context_len < 1:
    raise ValueError(f"max_context_len: expected >= 1, found {max_context_len}")
  prefix = [] if bos_id is None else [int(bos_id)]
  body = [int(token) for segment in segments for token in segment]
  room = max_context_len - len(prefix)
  return prefix + body[max(0, len(body) - room):]
