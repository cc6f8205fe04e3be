"""Masked statistics against numpy / the original's whitening, and on empty masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from steptool_jax.rl.masked import explained_variance, masked_mean, masked_var, masked_whiten
from tests.rl import reference


def test_hand_worked_mean_and_var():
  x = np.array([[1.0, 100.0, 3.0], [5.0, 7.0, -50.0]])
  mask = np.array([[1, 0, 1], [1, 1, 0]])
  # picked 1, 3, 5, 7: mean 4, sum of squares 9+1+1+9 = 20 -> biased 5, unbiased 20/3
  assert float(masked_mean(x, mask)) == pytest.approx(4.0)
  assert float(masked_var(x, mask, unbiased=False)) == pytest.approx(5.0)
  assert float(masked_var(x, mask)) == pytest.approx(20 / 3)
  np.testing.assert_allclose(masked_mean(x, mask, axis=-1), [2.0, 6.0])


@pytest.mark.parametrize("shift_mean", [True, False])
def test_whiten_matches_the_original(shift_mean):
  rng = np.random.default_rng(3)
  x = rng.normal(2.0, 3.0, size=(3, 11))
  mask = (rng.random((3, 11)) < 0.5).astype(np.int32)
  mask[0, 0] = mask[1, 0] = 1
  got = jax.jit(masked_whiten, static_argnames=("shift_mean",))(x, mask, shift_mean=shift_mean)
  np.testing.assert_allclose(got, reference.masked_whiten_loop(x, mask, shift_mean), rtol=1e-5, atol=1e-6)


def test_explained_variance():
  targets = np.array([[1.0, 2.0, 3.0, 4.0, 99.0]])
  mask = np.array([[1, 1, 1, 1, 0]])
  # residuals .5, -.5, .5, -.5: var .25; targets var 1.25 -> 1 - .2 = .8
  preds = targets - np.array([[0.5, -0.5, 0.5, -0.5, 0.0]])
  assert float(explained_variance(preds, targets, mask)) == pytest.approx(0.8)


def test_empty_mask_gives_zeros_and_finite_gradients():
  x = jnp.arange(6.0).reshape(2, 3)
  empty = jnp.zeros((2, 3), jnp.int32)

  def everything(v):
    return (masked_mean(v, empty) + masked_var(v, empty) + jnp.sum(masked_whiten(v, empty))
            + explained_variance(v, 2 * v, empty))

  value, grad = jax.jit(jax.value_and_grad(everything))(x)
  assert float(value) == 0.0
  np.testing.assert_array_equal(grad, np.zeros((2, 3)))
  one = jnp.zeros((2, 3), jnp.int32).at[0, 1].set(1)  # a single token: no Bessel division by zero
  assert np.isfinite(float(masked_var(x, one)))
