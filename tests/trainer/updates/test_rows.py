"""Row layout helpers: the strided split/merge against numpy indexing, chunked maps against a
per-chunk loop, real-row counts, and the row constraint on a mesh."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from steptool_jax.parallel import make_mesh, sharding_context
from steptool_jax.trainer.updates.rows import constrain_rows, in_chunks, rows_in_batch, strided_merge, strided_split

X = np.arange(12 * 3 * 2, dtype=np.float32).reshape(12, 3, 2)


@pytest.mark.parametrize("parts", [1, 2, 3, 4, 6, 12])
def test_strided_split_is_numpy_strided_indexing(parts):
  split = np.asarray(strided_split(jnp.asarray(X), parts))
  assert split.shape == (parts, 12 // parts, 3, 2)
  for i in range(parts):
    np.testing.assert_array_equal(split[i], X[i::parts])


@pytest.mark.parametrize("parts", [1, 3, 4])
def test_strided_merge_inverts_the_split(parts):
  parts_array = np.stack([X[i::parts] for i in range(parts)])
  np.testing.assert_array_equal(np.asarray(strided_merge(jnp.asarray(parts_array))), X)
  np.testing.assert_array_equal(np.asarray(strided_merge(strided_split(jnp.asarray(X), parts))), X)


def test_rows_in_batch_counts_rows_with_any_attention():
  mask = np.array([[1, 1, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0]], np.int32)
  count = rows_in_batch(jnp.asarray(mask))
  assert count.dtype == jnp.float32 and float(count) == 2.0
  assert float(rows_in_batch(jnp.zeros((3, 5), jnp.int32))) == 0.0


def test_in_chunks_maps_over_strided_chunks_and_restores_row_order():
  """A function that depends on its whole chunk (row minus chunk mean) shows which rows were
  together: chunk j of `rows / chunk_rows` holds rows j, j + parts, ... (the strided split)."""
  a = np.random.default_rng(0).standard_normal((12, 5)).astype(np.float32)
  b = np.arange(12, dtype=np.float32)
  seen_shapes = []

  def fn(x, y):
    seen_shapes.append(x.shape)
    return x - x.mean(axis=0), y * 2

  out_a, out_b = jax.jit(lambda a, b: in_chunks(fn, 3, a, b))(a, b)
  assert seen_shapes == [(3, 5)]  # traced once, on chunks of 3 rows
  parts = 12 // 3
  expected = np.empty_like(a)
  for j in range(parts):
    rows = np.arange(j, 12, parts)
    expected[rows] = a[rows] - a[rows].mean(axis=0)
  np.testing.assert_allclose(np.asarray(out_a), expected, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(out_b), b * 2)


def test_constrain_rows_is_the_identity_without_a_mesh():
  x = jnp.arange(8 * 4).reshape(2, 4, 4)
  np.testing.assert_array_equal(np.asarray(constrain_rows(x)), np.asarray(x))


def test_constrain_rows_splits_the_rows_over_the_batch_axes():
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2}, jax.devices()[:8])
  x = np.arange(2 * 8 * 4, dtype=np.float32).reshape(2, 8, 4)  # [accum, rows, length]
  with sharding_context(mesh):
    y = jax.jit(lambda v: constrain_rows(v * 1.0))(x)
  np.testing.assert_array_equal(np.asarray(y), x)
  assert y.sharding.is_equivalent_to(NamedSharding(mesh, PartitionSpec(None, ("data", "fsdp"), None)), 3)
  # Each of the 4 batch shards holds a contiguous block of 2 rows (replicated over tensor).
  for shard in y.addressable_shards:
    rows = shard.index[1]
    assert rows.stop - rows.start == 2
    np.testing.assert_array_equal(np.asarray(shard.data), x[:, rows])
