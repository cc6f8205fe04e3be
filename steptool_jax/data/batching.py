"""Collating tokenised examples into fixed-shape numpy batches.

Every batch is padded on the right to one of a few length buckets (and, for step-grained
batches, to a fixed number of step slots), so a jitted update sees a handful of shapes and
compiles a handful of times. The layout is the one of docs/conventions.md.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

Example = Mapping[str, Any]


def length_buckets(max_len: int, *, min_len: int = 64) -> tuple[int, ...]:
  """Powers of two from `min_len` up to (and always ending with) `max_len`."""
  if max_len < 1 or min_len < 1:
    raise ValueError(f"length buckets: expected max_len, min_len >= 1, found {max_len}, {min_len}")
  buckets = []
  size = 1
  while size < max_len:
    if size >= min_len:
      buckets.append(size)
    size *= 2
  return tuple(buckets) + (max_len,)


def bucket_length(length: int, buckets: Sequence[int]) -> int:
  """The smallest bucket that holds `length` tokens."""
  for bucket in sorted(buckets):
    if length <= bucket:
      return bucket
  raise ValueError(f"length_buckets: expected a bucket >= {length} tokens, largest is {max(buckets)}"
                   " (it should be max_context_len + max_response_len)")


def collate_step_grained(examples: Sequence[Example], *, pad_id: int, length_buckets: Sequence[int],
                         max_steps: int, batch_size: int | None = None) -> dict[str, np.ndarray]:
  """A step-grained batch: `input_ids`, `attention_mask`, `action_mask`, `step_ids` `[B, T]`,
  `step_rewards` `[B, max_steps]`, `num_steps` `[B]`.

  `batch_size` pads the batch with empty rows (all masks 0) so the last, short batch of
  an epoch keeps the jitted shape; with no examples at all the batch is `batch_size` empty
  rows of the smallest bucket's width (a process that holds none of a batch's rows).
  """
  batch = _pad_tokens(examples, ("action_mask", "step_ids"), pad_values={"step_ids": -1},
                      pad_id=pad_id, length_buckets=length_buckets, batch_size=batch_size)
  rows = len(batch["input_ids"])
  step_rewards = np.zeros((rows, max_steps), np.float32)
  num_steps = np.zeros(rows, np.int32)
  for i, example in enumerate(examples):
    rewards = np.asarray(example["step_rewards"], np.float32)
    if len(rewards) > max_steps:
      raise ValueError(f"max_steps: expected >= the {len(rewards)} steps of a row, found {max_steps}")
    step_rewards[i, :len(rewards)] = rewards
    num_steps[i] = int(example["num_steps"])
  batch["step_rewards"] = step_rewards
  batch["num_steps"] = num_steps
  return batch


def collate_sft(examples: Sequence[Example], *, pad_id: int, length_buckets: Sequence[int],
                batch_size: int | None = None) -> dict[str, np.ndarray]:
  """An SFT batch: `input_ids`, `attention_mask`, `loss_mask`, all `[B, T]`."""
  return _pad_tokens(examples, ("loss_mask",), pad_values={}, pad_id=pad_id, length_buckets=length_buckets,
                     batch_size=batch_size)


def iterate_batches(examples: Sequence[Example], collate: Callable[[Sequence[Example]], dict[str, np.ndarray]], *,
                    batch_size: int, seed: int | None = None, drop_remainder: bool = True,
                    shard_index: int = 0, num_shards: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Batches over one pass of `examples` (a list, or a `datasets.Dataset` in numpy format).

  `seed` shuffles the order; `shard_index`/`num_shards` give each host its share of every
  epoch (multi-host data loading), taken after the shuffle so hosts never overlap.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size: expected >= 1, found {batch_size}")
  order = np.arange(len(examples)) if seed is None else np.random.default_rng(seed).permutation(len(examples))
  order = order[shard_index::num_shards]
  stop = len(order) - len(order) % batch_size if drop_remainder else len(order)
  for start in range(0, stop, batch_size):
    yield collate([examples[int(i)] for i in order[start:start + batch_size]])


def _pad_tokens(examples: Sequence[Example], mask_keys: Sequence[str], *, pad_values: Mapping[str, int],
                pad_id: int, length_buckets: Sequence[int], batch_size: int | None) -> dict[str, np.ndarray]:
  rows = len(examples) if batch_size is None else batch_size
  if rows < len(examples):
    raise ValueError(f"batch_size: expected >= the {len(examples)} examples given, found {batch_size}")
  width = bucket_length(max((len(example["input_ids"]) for example in examples), default=0), length_buckets)
  batch = {"input_ids": np.full((rows, width), pad_id, np.int32),
           "attention_mask": np.zeros((rows, width), np.int32)}
  for key in mask_keys:
    batch[key] = np.full((rows, width), pad_values.get(key, 0), np.int32)
  for i, example in enumerate(examples):
    length = len(example["input_ids"])
    batch["input_ids"][i, :length] = example["input_ids"]
    batch["attention_mask"][i, :length] = 1
    for key in mask_keys:
      batch[key][i, :length] = example[key]
  return batch
