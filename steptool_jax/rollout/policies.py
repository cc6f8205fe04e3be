"""Policies that act in batched episodes: a model generating with a KV cache, or a script.

An `ActionPolicy` maps a batch of `ActionRequest`s (the episode so far and its token
context) to one `Action` each: the text the environment reads, the tokens that go into the
dialogue (and later into the training row) and, for a model, their behaviour log-probs.

`model_policy` left-pads the contexts, pads the batch to a few fixed sizes and the width to
a few fixed lengths (so `generate` compiles a handful of times, not once per batch), and
splits every generated row at its stop (`stopping.py`). `text_policy` wraps a function
from episodes to action texts (the scripted expert, a give-up agent) in the same interface.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol, Sequence

import jax
import numpy as np

from steptool_jax.data.batching import bucket_length
from steptool_jax.envs import episode as env
from steptool_jax.models.generate import SamplingConfig, generate_with_policy
from steptool_jax.models.policy import Policy
from steptool_jax.rollout import stopping


@dataclasses.dataclass(frozen=True)
class ActionRequest:
  """One episode waiting for its next action: the episode so far and the policy's context."""

  episode: env.Episode
  context_ids: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Action:
  """One action as written by a policy.

  `text` is what the environment parses; `token_ids` are the action's tokens in the
  dialogue (stop marker included, a hallucinated next turn cut off); `logprobs` are
  `log pi(token | context)` of those tokens under the behaviour policy (None for scripts);
  `stop` says why the action ended (`stopping.EOS`, `TURN`, `LENGTH`, `SCRIPTED`).
  """

  text: str
  token_ids: tuple[int, ...]
  logprobs: tuple[float, ...] | None
  stop: str


class ActionPolicy(Protocol):
  def __call__(self, requests: Sequence[ActionRequest]) -> list[Action]:
    ...


def batch_buckets(max_batch: int) -> tuple[int, ...]:
  """Powers of two below `max_batch`, then `max_batch`: the batch sizes `generate` sees."""
  sizes, size = [], 1
  while size < max_batch:
    sizes.append(size)
    size *= 2
  return tuple(sizes) + (max_batch,)


def width_buckets(max_context_len: int, step: int = 128) -> tuple[int, ...]:
  """Multiples of `step` up to `max_context_len` (and it): the prompt widths `generate` sees."""
  if step < 1:
    raise ValueError(f"width bucket step: expected >= 1, found {step}")
  return tuple(range(step, max_context_len, step)) + (max_context_len,)


def _left_pad(rows: Sequence[Sequence[int]], width: int, num_rows: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  ids = np.full((num_rows, width), pad_id, np.int32)
  mask = np.zeros((num_rows, width), np.int32)
  for i in range(num_rows):
    row = rows[i] if i < len(rows) else rows[0]  # filler rows repeat a real one (they stop alike)
    ids[i, width - len(row):] = row
    mask[i, width - len(row):] = 1
  return ids, mask


def model_policy(policy: Policy, tokenizer: Any, stops: stopping.ActionStops, sampling: SamplingConfig,
                 rng: jax.Array, *, template: str, max_batch: int, widths: Sequence[int],
                 use_lora: bool = True) -> ActionPolicy:
  """A generating policy. `sampling.eos_ids`/`stop_sequences` are replaced by `stops`.

  Requests are answered `max_batch` at a time; each call draws fresh randomness from
  `rng` (folded with a call counter), so a run is reproducible from `rng`.
  """
  sampling = dataclasses.replace(sampling, eos_ids=stops.stop_ids, stop_sequences=stops.stop_sequences)
  sizes = batch_buckets(max_batch)
  calls = [0]

  def act(requests: Sequence[ActionRequest]) -> list[Action]:
    actions: list[Action] = []
    for start in range(0, len(requests), max_batch):
      chunk = requests[start:start + max_batch]
      contexts = [r.context_ids for r in chunk]
      width = bucket_length(max(len(c) for c in contexts), widths)
      ids, mask = _left_pad(contexts, width, bucket_length(len(chunk), sizes), sampling.pad_id)
      key = jax.random.fold_in(rng, calls[0])
      calls[0] += 1
      out = jax.device_get(generate_with_policy(policy, ids, mask, key, sampling, use_lora=use_lora))
      for i in range(len(chunk)):
        tokens = [int(t) for t in out.tokens[i, :out.lengths[i]]]
        cut = stopping.split_action(tokens, bool(out.stopped[i]), stops)
        kept = tokens[:cut.length]
        text = tokenizer.decode(kept[:len(kept) - cut.end_length], skip_special_tokens=False)
        actions.append(Action(
            text=stopping.cut_at_turn_header(text, template), token_ids=tuple(kept),
            logprobs=tuple(float(x) for x in out.logprobs[i, :cut.length]), stop=cut.stop))
    return actions

  return act


def text_policy(write: Callable[[env.Episode], str], tokenizer: Any, *, eos_id: int | None = None) -> ActionPolicy:
  """A scripted policy: `write(episode)` is the next action's text. Its tokens are the
  tokenised text (+ `eos_id`, as a model trained with EOS after actions would end it)."""

  def act(requests: Sequence[ActionRequest]) -> list[Action]:
    texts = [write(r.episode) for r in requests]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    suffix = () if eos_id is None else (int(eos_id),)
    return [Action(text=text, token_ids=tuple(ids) + suffix, logprobs=None, stop=stopping.SCRIPTED)
            for text, ids in zip(texts, encoded)]

  return act
