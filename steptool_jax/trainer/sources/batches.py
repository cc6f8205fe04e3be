"""The interface every data source implements, and how its rows reach the devices.

    arrays, stats = source.batch(epoch, index, policy_variables)
        arrays: this process's rows of global batch `index` of epoch `epoch` (numpy, `source.keys`)
        stats:  host-side statistics of that batch (rollout pass rate, ...), logged with its update
    source.steps_per_epoch, source.num_rows, source.counters, source.keys

A batch is a pure function of (seed, epoch, index) and, for online rollouts, of the policy:
resuming at step s reads exactly the batches an uninterrupted run would have read, with no
iterator state to save. Each process collates only the rows its devices hold
(`process_row_slice`); `device_batch` assembles the global arrays from them.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from steptool_jax.parallel.sharding import spec_sharding

Batch = dict[str, np.ndarray]

# Logical axes of every batch array (the rules table maps them onto the mesh).
BATCH_AXES: Mapping[str, tuple[str | None, ...]] = {
    "input_ids": ("batch", "length"), "attention_mask": ("batch", "length"), "action_mask": ("batch", "length"),
    "step_ids": ("batch", "length"), "loss_mask": ("batch", "length"), "step_rewards": ("batch", None),
    "num_steps": ("batch",), "group_ids": ("batch",), "behaviour_logp": ("batch", "length"),
}

STEP_GRAINED_KEYS = ("input_ids", "attention_mask", "action_mask", "step_ids", "step_rewards", "num_steps")
ONLINE_KEYS = STEP_GRAINED_KEYS + ("group_ids",)  # rollouts of the same task share a group id
BEHAVIOUR_KEYS = ONLINE_KEYS + ("behaviour_logp",)  # ppo.old_logp = "behaviour": the rollout's own log-probs
SFT_KEYS = ("input_ids", "attention_mask", "loss_mask")


class DataSource(Protocol):
  keys: tuple[str, ...]  # the arrays of every batch
  num_rows: int
  steps_per_epoch: int
  counters: dict[str, Any]

  def batch(self, epoch: int, index: int, policy_variables: Mapping[str, Any]) -> tuple[Batch, dict[str, float]]:
    """This process's rows of global batch `index` of epoch `epoch`, and its statistics."""


def check_index(index: int, steps_per_epoch: int) -> None:
  if not 0 <= index < steps_per_epoch:
    raise IndexError(f"batch index {index} outside the {steps_per_epoch} batches of an epoch")


def epoch_order(seed: int, epoch: int, count: int) -> np.ndarray:
  """The order in which epoch `epoch` visits `count` rows (or tasks): a permutation seeded by (seed, epoch)."""
  return np.random.default_rng([seed, epoch]).permutation(count)


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


def local_rows(mesh: Mesh, global_rows: int) -> slice:
  """This process's rows of every global batch on `mesh`."""
  return process_row_slice(spec_sharding(BATCH_AXES["input_ids"], mesh), global_rows)


def device_batch(batch: Batch, mesh: Mesh, global_rows: int) -> dict[str, jax.Array]:
  """Process-local numpy rows -> global arrays laid out over the mesh's batch axes."""
  out = {}
  for key, local in batch.items():
    sharding = spec_sharding(BATCH_AXES[key], mesh)
    out[key] = jax.make_array_from_process_local_data(sharding, local, (global_rows,) + local.shape[1:])
  return out


def batch_shardings(keys: tuple[str, ...], mesh: Mesh) -> dict[str, NamedSharding]:
  """The `NamedSharding` of every batch array (the update's input shardings)."""
  return {key: spec_sharding(BATCH_AXES[key], mesh) for key in keys}
