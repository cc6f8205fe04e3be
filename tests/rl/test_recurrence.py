"""reverse_linear_recurrence: every method equals a plain backward loop."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steptool_jax.rl.recurrence import METHODS, reverse_linear_recurrence

# chunk_size 8 with T = 21: several chunks and a padded last one.
recurrence = jax.jit(reverse_linear_recurrence, static_argnames=("method", "chunk_size"))


def backward_loop(decay, inputs):
  decay = np.broadcast_to(np.asarray(decay, np.float64), inputs.shape)
  out = np.zeros(inputs.shape)
  running = np.zeros(inputs.shape[:-1])
  for t in reversed(range(inputs.shape[-1])):
    running = inputs[..., t] + decay[..., t] * running
    out[..., t] = running
  return out


def test_hand_worked():
  # x3 = 4; x2 = 3 + .5*4 = 5; x1 = 2 + 0*5 = 2; x0 = 1 + 2*2 = 5
  for method in METHODS:
    got = recurrence(np.array([[2.0, 0.0, 0.5, 0.5]]), np.array([[1.0, 2.0, 3.0, 4.0]]), method=method, chunk_size=3)
    np.testing.assert_allclose(got, [[5.0, 2.0, 5.0, 4.0]], err_msg=method)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["per_position", "shared_rows", "scalar"]))
def test_matches_backward_loop(seed, decay_kind):
  rng = np.random.default_rng(seed)
  inputs = rng.normal(size=(2, 3, 21)).astype(np.float32)
  decay = {
      "per_position": rng.choice([0.0, 0.9, 1.0], size=(2, 3, 21)),
      "shared_rows": rng.choice([0.5, 1.0], size=(3, 21)),  # broadcast over the leading axis
      "scalar": np.float32(rng.uniform(0, 1)),
  }[decay_kind]
  want = backward_loop(decay, inputs)
  # "auto" only dispatches to these; it is exercised through compute_gae in test_gae.py.
  for method in ("scan", "associative", "chunked"):
    got = recurrence(np.asarray(decay, np.float32), inputs, method=method, chunk_size=8)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=method)


def test_rejects_bad_arguments():
  with pytest.raises(ValueError, match="method"):
    reverse_linear_recurrence(0.5, np.zeros((2, 3)), method="parallel")
  with pytest.raises(ValueError, match="decay"):
    reverse_linear_recurrence(np.zeros((4, 3)), np.zeros((2, 3)))
