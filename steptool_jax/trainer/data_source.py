"""Where training batches come from, behind one small interface.

    source.batch(epoch, index, policy_variables) -> dict of numpy arrays   (this process's rows of global batch `index`)
    source.batch_stats() -> dict of floats   (host-side statistics of the batch just made, logged with its update)
    source.steps_per_epoch, source.num_rows, source.counters

A batch is a pure function of (seed, epoch, index): epoch e visits the rows in the order
of a permutation seeded by (seed, e), global batch i is the slice [i*B, (i+1)*B) of it, and
each process collates only the rows its devices hold. Resuming at step s therefore reads
exactly the batches an uninterrupted run would have read, with no iterator state to save.
The last batch of an epoch may be short: it is padded with empty rows (all masks 0), and
its length bucket is chosen from the lengths of the whole global batch, so every process
pads to the same width.

`OfflineSource` serves fixed tokenised data (the step-grained TSV for PPO, conversations
for SFT) and ignores the policy. `trainer.online_source.OnlineSource` (`rollout.mode =
"online"`) has the current policy play the built-in environment for every batch, so its
batch is a pure function of (seed, epoch, index) and the policy.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from typing import Any, Callable, Mapping, Protocol, Sequence

import jax
import ml_collections
import numpy as np
import pyarrow.compute as pc
from jax.sharding import Mesh, NamedSharding

from steptool_jax.data.batching import bucket_length, collate_sft, collate_step_grained, length_buckets
from steptool_jax.data.pipeline import TokenizedDataset, tokenized_sft_dataset, tokenized_step_grained_dataset
from steptool_jax.parallel.sharding import spec_sharding
from steptool_jax.trainer import env_data
from steptool_jax.trainer.online_source import make_online_source

Batch = dict[str, np.ndarray]

# Logical axes of every batch array (the rules table maps them onto the mesh).
BATCH_AXES: Mapping[str, tuple[str | None, ...]] = {
    "input_ids": ("batch", "length"), "attention_mask": ("batch", "length"), "action_mask": ("batch", "length"),
    "step_ids": ("batch", "length"), "loss_mask": ("batch", "length"), "step_rewards": ("batch", None),
    "num_steps": ("batch",), "group_ids": ("batch",),
}


STEP_GRAINED_KEYS = ("input_ids", "attention_mask", "action_mask", "step_ids", "step_rewards", "num_steps")
ONLINE_KEYS = STEP_GRAINED_KEYS + ("group_ids",)  # rollouts of the same task share a group id
SFT_KEYS = ("input_ids", "attention_mask", "loss_mask")


class DataSource(Protocol):
  num_rows: int
  steps_per_epoch: int
  counters: dict[str, Any]

  def batch(self, epoch: int, index: int, policy_variables: Mapping[str, Any] | None = None) -> Batch:
    """This process's rows of global batch `index` of epoch `epoch` (online: played by the
    policy with these variables)."""

  def batch_stats(self) -> dict[str, float]:
    """Statistics of the batch made last (empty for fixed data)."""


@dataclasses.dataclass
class OfflineSource:
  """Fixed tokenised examples, shuffled per epoch, `batch_size` rows per global batch.

  `collate(examples, width, rows)` pads this process's examples (possibly none) to
  `rows` rows of `width` tokens.
  """

  examples: Sequence[Mapping[str, Any]]
  lengths: np.ndarray
  collate: Callable[[list[Mapping[str, Any]], int, int], Batch]
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

  def order(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)

  def batch(self, epoch: int, index: int, policy_variables: Mapping[str, Any] | None = None) -> Batch:
    del policy_variables  # fixed data
    if not 0 <= index < self.steps_per_epoch:
      raise IndexError(f"batch index {index} outside the {self.steps_per_epoch} batches of an epoch")
    rows = self.order(epoch)[index * self.batch_size:(index + 1) * self.batch_size]
    width = bucket_length(int(self.lengths[rows].max()), self.buckets)
    local = rows[self.local_rows]
    rows_here = self.local_rows.stop - self.local_rows.start
    return self.collate([self.examples[int(i)] for i in local], width, rows_here)

  def batch_stats(self) -> dict[str, float]:
    return {}


def process_row_slice(sharding: NamedSharding, global_rows: int) -> slice:
  """The contiguous rows of a `[global_rows, ...]` batch that this process's devices hold."""
  spans = {index[0].indices(global_rows)[:2] for index in sharding.addressable_devices_indices_map(
      (global_rows, 1)).values()}
  start, stop = min(s for s, _ in spans), max(e for _, e in spans)
  covered = sum(e - s for s, e in spans)
  if covered != stop - start:
    raise ValueError(f"mesh: this process's devices hold non-contiguous batch rows {sorted(spans)}; order the"
                     " mesh devices by process")
  return slice(start, stop)


def device_batch(batch: Batch, mesh: Mesh, global_rows: int) -> dict[str, jax.Array]:
  """Process-local numpy rows -> global arrays laid out over the mesh's batch axes."""
  out = {}
  for key, local in batch.items():
    sharding = spec_sharding(BATCH_AXES[key], mesh)
    out[key] = jax.make_array_from_process_local_data(sharding, local, (global_rows,) + local.shape[1:])
  return out


def _filled(rows: int, width: int, value: int) -> np.ndarray:
  """A block of empty rows (this process holds none of the batch's examples)."""
  return np.full((rows, width), value, np.int32)


def _step_grained_collate(pad_id: int, max_steps: int) -> Callable[[list[Mapping[str, Any]], int, int], Batch]:
  def collate(examples: list[Mapping[str, Any]], width: int, rows: int) -> Batch:
    if examples:
      return collate_step_grained(examples, pad_id=pad_id, length_buckets=(width,), max_steps=max_steps,
                                  batch_size=rows)
    return {"input_ids": _filled(rows, width, pad_id), "attention_mask": _filled(rows, width, 0),
            "action_mask": _filled(rows, width, 0), "step_ids": _filled(rows, width, -1),
            "step_rewards": np.zeros((rows, max_steps), np.float32), "num_steps": np.zeros(rows, np.int32)}
  return collate


def _sft_collate(pad_id: int, loss_on: str = "actions") -> Callable[[list[Mapping[str, Any]], int, int], Batch]:
  """`loss_on="dialogue"`: every real token is a target (a language model of the whole
  dialogue: a model trained from scratch also learns from the observations, which repeat
  the arguments of the calls, and from the queries); `"actions"`: the assistant actions only."""
  def collate(examples: list[Mapping[str, Any]], width: int, rows: int) -> Batch:
    if examples:
      batch = collate_sft(examples, pad_id=pad_id, length_buckets=(width,), batch_size=rows)
    else:
      batch = {"input_ids": _filled(rows, width, pad_id), "attention_mask": _filled(rows, width, 0),
               "loss_mask": _filled(rows, width, 0)}
    if loss_on == "dialogue":
      batch["loss_mask"] = batch["attention_mask"].copy()
      batch["loss_mask"][:, 0] = 0  # position 0 has no predecessor to be predicted from
    return batch
  return collate


def data_file(config: ml_collections.ConfigDict, cache_dir: pathlib.Path) -> pathlib.Path:
  """The configured data file, or the built-in environment's (generated on first use)."""
  if config.data.train_path:
    return pathlib.Path(os.path.expanduser(config.data.train_path))
  generated = env_data.ensure_env_data(cache_dir, env_data.generate_config(config))
  return env_data.sft_file(generated) if config.algorithm == "sft" else env_data.step_grained_file(generated)


def _tokenized(config: ml_collections.ConfigDict, path: pathlib.Path, tokenizer: Any,
               cache_dir: pathlib.Path) -> TokenizedDataset:
  data = config.data
  options = dict(cache_dir=cache_dir, max_context_len=data.max_context_len, max_response_len=data.max_response_len,
                 add_bos=data.add_bos, eos_after_actions=data.eos_after_actions, skip_invalid=data.skip_invalid)
  if config.algorithm == "sft":
    return tokenized_sft_dataset(path, tokenizer, data.template, **options)
  return tokenized_step_grained_dataset(path, tokenizer, **options)


def batch_keys(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The arrays of one batch of this run."""
  if config.algorithm == "sft":
    return SFT_KEYS
  return ONLINE_KEYS if config.rollout.mode == "online" else STEP_GRAINED_KEYS


def make_data_source(config: ml_collections.ConfigDict, tokenizer: Any, *, cache_dir: pathlib.Path,
                     mesh: Mesh) -> DataSource:
  """The training data of a run: PPO step-grained rows (fixed, or online rollouts) or SFT
  conversations. An online source must be bound to the model (`for_model`) before use."""
  pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  row_slice = process_row_slice(spec_sharding(BATCH_AXES["input_ids"], mesh), config.batch.size)
  if config.algorithm == "ppo" and config.rollout.mode == "online":
    return make_online_source(config, tokenizer, local_rows=row_slice,
                              collate=_step_grained_collate(pad_id, config.data.env.max_steps))
  path = data_file(config, cache_dir)
  tokenized = _tokenized(config, path, tokenizer, cache_dir / "tokenized")
  dataset = tokenized.dataset
  if len(dataset) == 0:
    raise ValueError(f"data.train_path: no usable rows in {path} ({tokenized.counters})")
  lengths = pc.list_value_length(dataset.data.column("input_ids")).to_numpy()
  max_len = config.data.max_context_len + config.data.max_response_len
  buckets = length_buckets(max_len, min_len=min(config.data.min_bucket_len, max_len))
  counters: dict[str, Any] = {"path": str(path), **tokenized.counters}
  if config.algorithm == "sft":
    collate = _sft_collate(pad_id, config.data.sft_loss_on)
  else:
    most_steps = int(np.max(dataset.data.column("num_steps").to_numpy()))
    max_steps = config.data.max_steps or most_steps
    if max_steps < most_steps:
      raise ValueError(f"data.max_steps: expected >= the {most_steps} steps of the longest row of {path}, found"
                       f" {max_steps}")
    counters["max_steps"] = max_steps
    collate = _step_grained_collate(pad_id, max_steps)
  return OfflineSource(examples=dataset, lengths=lengths, collate=collate, batch_size=config.batch.size,
                       seed=config.seed, buckets=buckets, local_rows=row_slice, counters=counters)
