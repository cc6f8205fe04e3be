"""Fixed tokenised data: the step-grained TSV (PPO) or SFT conversations, shuffled per epoch.

Epoch e visits the rows in the order of a permutation seeded by (seed, e); global batch i is
the slice [i*B, (i+1)*B) of it, and each process collates only the rows its devices hold.
The last batch of an epoch may be short: it is padded with empty rows (all masks 0), and
its length bucket is chosen from the lengths of the whole global batch, so every process
pads to the same width. The policy is not consulted.

Without `data.train_path` the data is the built-in environment's, generated once into the
cache (`sources.env_data`). In a multi-process run process 0 generates and tokenises into
the cache while the others wait, then they read it (`distributed.main_process_first`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pyarrow.compute as pc

from steptool_jax.config.run import RunConfig
from steptool_jax.data.batching import bucket_length, collate_sft, collate_step_grained, length_buckets
from steptool_jax.data.pipeline import TokenizedDataset, tokenized_sft_dataset, tokenized_step_grained_dataset
from steptool_jax.trainer import distributed
from steptool_jax.trainer.sources import env_data
from steptool_jax.trainer.sources.batches import SFT_KEYS, STEP_GRAINED_KEYS, Batch, check_index, epoch_order

# collate(examples of this process (possibly none), width, rows) -> Batch
Collate = Callable[[list[Mapping[str, Any]], int, int], Batch]


@dataclasses.dataclass
class OfflineSource:
  """Fixed tokenised examples, shuffled per epoch, `batch_size` rows per global batch."""

  keys: tuple[str, ...]
  examples: Sequence[Mapping[str, Any]]
  lengths: np.ndarray
  collate: Collate
  batch_size: int
  seed: int
  buckets: tuple[int, ...]
  local_rows: slice  # this process's rows within every global batch
  counters: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def num_rows(self) -> int:
    return len(self.lengths)

  @property
  def steps_per_epoch(self) -> int:
    return math.ceil(self.num_rows / self.batch_size)

  def batch(self, epoch: int, index: int, policy_variables: Mapping[str, Any] | None = None
            ) -> tuple[Batch, dict[str, float]]:
    del policy_variables  # fixed data
    check_index(index, self.steps_per_epoch)
    rows = epoch_order(self.seed, epoch, self.num_rows)[index * self.batch_size:(index + 1) * self.batch_size]
    width = bucket_length(int(self.lengths[rows].max()), self.buckets)
    local = rows[self.local_rows]
    rows_here = self.local_rows.stop - self.local_rows.start
    return self.collate([self.examples[int(i)] for i in local], width, rows_here), {}


def step_grained_collate(pad_id: int, max_steps: int) -> Collate:
  def collate(examples: list[Mapping[str, Any]], width: int, rows: int) -> Batch:
    return collate_step_grained(examples, pad_id=pad_id, length_buckets=(width,), max_steps=max_steps,
                                batch_size=rows)
  return collate


def sft_collate(pad_id: int, loss_on: str) -> Collate:
  """`loss_on="dialogue"`: every real token is a target (a language model of the whole
  dialogue: a model trained from scratch also learns from the observations, which repeat
  the arguments of the calls, and from the queries); `"actions"`: the assistant actions only."""
  def collate(examples: list[Mapping[str, Any]], width: int, rows: int) -> Batch:
    batch = collate_sft(examples, pad_id=pad_id, length_buckets=(width,), batch_size=rows)
    if loss_on == "dialogue":
      batch["loss_mask"] = batch["attention_mask"].copy()
      batch["loss_mask"][:, 0] = 0  # position 0 has no predecessor to be predicted from
    return batch
  return collate


def pad_id_of(tokenizer: Any) -> int:
  return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def _data_file(config: RunConfig, cache_dir: pathlib.Path, kind: str) -> pathlib.Path:
  """The configured data file, or the built-in environment's (generated on first use)."""
  if config.data.train_path:
    return pathlib.Path(os.path.expanduser(config.data.train_path))
  generated = env_data.ensure_env_data(cache_dir, env_data.generate_config(config))
  return env_data.sft_file(generated) if kind == "sft" else env_data.step_grained_file(generated)


def _tokenize_options(config: RunConfig, cache_dir: pathlib.Path) -> dict[str, Any]:
  data = config.data
  return dict(cache_dir=cache_dir / "tokenized", max_context_len=data.max_context_len,
              max_response_len=data.max_response_len, add_bos=data.add_bos,
              eos_after_actions=data.eos_after_actions, skip_invalid=data.skip_invalid)


def _source(config: RunConfig, tokenized: TokenizedDataset, path: pathlib.Path, keys: tuple[str, ...],
            collate: Collate, local_rows: slice, counters: dict[str, Any]) -> OfflineSource:
  dataset = tokenized.dataset
  lengths = pc.list_value_length(dataset.data.column("input_ids")).to_numpy()
  max_len = config.data.max_context_len + config.data.max_response_len
  buckets = length_buckets(max_len, min_len=min(config.data.min_bucket_len, max_len))
  return OfflineSource(keys=keys, examples=dataset, lengths=lengths, collate=collate, batch_size=config.batch.size,
                       seed=config.seed, buckets=buckets, local_rows=local_rows,
                       counters={"path": str(path), **tokenized.counters, **counters})


def _check_rows(tokenized: TokenizedDataset, path: pathlib.Path) -> None:
  if len(tokenized.dataset) == 0:
    raise ValueError(f"data.train_path: no usable rows in {path} ({tokenized.counters})")


def step_grained_source(config: RunConfig, tokenizer: Any, *, cache_dir: pathlib.Path,
                        local_rows: slice) -> OfflineSource:
  """PPO on fixed step-grained rows (`data.train_path`, or the environment's expert data)."""
  def build() -> tuple[pathlib.Path, TokenizedDataset]:
    path = _data_file(config, cache_dir, "step_grained")
    return path, tokenized_step_grained_dataset(path, tokenizer, **_tokenize_options(config, cache_dir))

  path, tokenized = distributed.main_process_first("step-grained data", build)
  _check_rows(tokenized, path)
  most_steps = int(np.max(tokenized.dataset.data.column("num_steps").to_numpy()))
  max_steps = config.data.max_steps or most_steps
  if max_steps < most_steps:
    raise ValueError(f"data.max_steps: expected >= the {most_steps} steps of the longest row of {path}, found"
                     f" {max_steps}")
  return _source(config, tokenized, path, STEP_GRAINED_KEYS, step_grained_collate(pad_id_of(tokenizer), max_steps),
                 local_rows, {"max_steps": max_steps})


def sft_source(config: RunConfig, tokenizer: Any, *, cache_dir: pathlib.Path, local_rows: slice) -> OfflineSource:
  """SFT on conversations (`data.train_path`, or the environment's solved expert episodes)."""
  def build() -> tuple[pathlib.Path, TokenizedDataset]:
    path = _data_file(config, cache_dir, "sft")
    return path, tokenized_sft_dataset(path, tokenizer, config.data.template, **_tokenize_options(config, cache_dir))

  path, tokenized = distributed.main_process_first("SFT data", build)
  _check_rows(tokenized, path)
  return _source(config, tokenized, path, SFT_KEYS, sft_collate(pad_id_of(tokenizer), config.data.sft_loss_on),
                 local_rows, {})
