"""Running moments against numpy over the whole stream, however the stream is cut into batches."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from steptool_jax.rl.normalize import initial_moments, running_std, update_moments

update = jax.jit(update_moments)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_moments_of_a_stream_cut_at_random_equal_numpy_over_all_of_it(seed):
  rng = np.random.default_rng(seed)
  values = rng.normal(3.0, 2.0, 200).astype(np.float32)
  cuts = np.sort(rng.choice(np.arange(1, 200), 6, replace=False))
  moments = initial_moments()
  seen = []
  for chunk in np.split(values, cuts):
    mask = rng.random(len(chunk)) < 0.8  # masked-out values (padding rows) do not count
    padded = np.where(mask, chunk, 1e6).astype(np.float32)
    moments = update(moments, padded, mask)
    seen.extend(chunk[mask])
    np.testing.assert_allclose(float(moments.count), len(seen))
    np.testing.assert_allclose(float(moments.mean), np.mean(seen), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(running_std(moments)), np.std(seen), rtol=1e-4)


def test_std_is_one_until_it_is_defined():
  moments = initial_moments()
  assert float(running_std(moments)) == 1.0
  moments = update(moments, np.array([5.0], np.float32), np.array([1]))
  assert float(running_std(moments)) == 1.0  # one value: no spread yet
  moments = update(moments, np.array([5.0, 5.0], np.float32), np.array([1, 1]))
  assert float(running_std(moments)) == 1.0  # all equal: nothing to divide by
  moments = update(moments, np.array([7.0], np.float32), np.array([1]))
  assert float(running_std(moments)) == pytest.approx(np.std([5.0, 5.0, 5.0, 7.0]), rel=1e-6)
