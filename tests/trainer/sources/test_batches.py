"""What every data source shares: the epoch order, batch index checks, which rows a process
holds, and process-local rows assembled into global arrays over the mesh."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from steptool_jax.parallel import make_mesh, spec_sharding
from steptool_jax.trainer.sources.batches import (BATCH_AXES, ONLINE_KEYS, SFT_KEYS, STEP_GRAINED_KEYS,
                                                  batch_shardings, check_index, device_batch, epoch_order,
                                                  local_rows, process_row_slice)


@pytest.mark.parametrize("seed, epoch", [(0, 0), (0, 1), (7, 3)])
def test_epoch_order_is_the_seeded_permutation(seed, epoch):
  order = epoch_order(seed, epoch, 10)
  np.testing.assert_array_equal(order, np.random.default_rng([seed, epoch]).permutation(10))
  assert sorted(order) == list(range(10))


def test_epochs_and_seeds_give_other_orders():
  orders = {tuple(epoch_order(seed, epoch, 20)) for seed in (0, 1) for epoch in (0, 1)}
  assert len(orders) == 4


@pytest.mark.parametrize("index", [-1, 3, 10])
def test_batches_outside_the_epoch_are_refused(index):
  with pytest.raises(IndexError, match=f"batch index {index} outside the 3 batches of an epoch"):
    check_index(index, 3)
  check_index(0, 3)
  check_index(2, 3)


def test_every_batch_key_has_logical_axes():
  for keys in (STEP_GRAINED_KEYS, ONLINE_KEYS, SFT_KEYS):
    assert set(keys) <= set(BATCH_AXES)
  assert ONLINE_KEYS == STEP_GRAINED_KEYS + ("group_ids",)
  assert all(BATCH_AXES[key][0] == "batch" for key in BATCH_AXES)


@dataclasses.dataclass
class FakeSharding:
  """Stands in for a sharding of a multi-process mesh: the row spans this process's devices hold."""
  spans: list[tuple[int, int]]

  def addressable_devices_indices_map(self, shape):
    return {device: (slice(start, stop), slice(None)) for device, (start, stop) in enumerate(self.spans)}


def test_process_row_slice_of_contiguous_devices():
  assert process_row_slice(FakeSharding([(4, 6), (6, 8)]), 16) == slice(4, 8)
  # Devices that hold the same rows (replicas over the tensor axis) count once.
  assert process_row_slice(FakeSharding([(0, 4), (0, 4), (4, 8), (4, 8)]), 16) == slice(0, 8)


def test_process_row_slice_refuses_rows_with_a_gap():
  with pytest.raises(ValueError, match=r"^mesh: this process's devices hold non-contiguous batch rows \[\(0, 2\),"
                                       r" \(4, 6\)\]; order the mesh devices by process"):
    process_row_slice(FakeSharding([(0, 2), (4, 6)]), 8)


def test_one_process_holds_every_row():
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2}, jax.devices()[:8])
  assert local_rows(mesh, 8) == slice(0, 8)
  assert process_row_slice(spec_sharding(("batch", "length"), mesh), 12) == slice(0, 12)


def test_device_batch_lays_rows_out_over_the_batch_axes():
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2}, jax.devices()[:8])
  rows = 8
  batch = {"input_ids": np.arange(rows * 6, dtype=np.int32).reshape(rows, 6),
           "step_rewards": np.arange(rows * 3, dtype=np.float32).reshape(rows, 3),
           "num_steps": np.arange(rows, dtype=np.int32)}
  placed = device_batch(batch, mesh, rows)
  shardings = batch_shardings(tuple(batch), mesh)
  for key, local in batch.items():
    array = placed[key]
    assert array.shape == local.shape and array.dtype == local.dtype
    assert array.sharding == shardings[key] == spec_sharding(BATCH_AXES[key], mesh)
    np.testing.assert_array_equal(np.asarray(array), local)
    # 4 batch shards of 2 contiguous rows each, every one on 2 devices (the tensor axis).
    blocks = {shard.index[0].indices(rows)[:2] for shard in array.addressable_shards}
    assert blocks == {(0, 2), (2, 4), (4, 6), (6, 8)}
    for shard in array.addressable_shards:
      np.testing.assert_array_equal(np.asarray(shard.data), local[shard.index])
