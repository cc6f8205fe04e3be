"""The KL controllers: hand-worked updates, jit and pytree behaviour."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from steptool_jax.rl.kl_controller import adaptive_kl_controller, fixed_kl_controller, update_kl_controller

update = jax.jit(update_kl_controller)


def test_adaptive_update_by_hand():
  ctl = adaptive_kl_controller(0.3, 6.0, 10000.0)  # the paper's
  # KL 9 is 50% over target, clipped to +20%: 0.3 * (1 + 0.2 * 64 / 10000) = 0.300384
  assert float(update(ctl, 9.0, 64).value) == pytest.approx(0.300384, rel=1e-6)
  # KL 5.7 is 5% under: 0.3 * (1 - 0.05 * 64 / 10000) = 0.299904
  assert float(update(ctl, 5.7, 64).value) == pytest.approx(0.299904, rel=1e-6)


def test_fixed_controller_does_not_move():
  ctl = fixed_kl_controller(0.05)
  assert float(update(ctl, 100.0, 64).value) == pytest.approx(0.05)


def test_state_is_one_leaf_and_repeated_updates_compound():
  ctl = adaptive_kl_controller(0.3, 6.0, 100.0)
  assert len(jax.tree.leaves(ctl)) == 1  # target and horizon are static config

  def ten_updates(c):
    return jax.lax.fori_loop(0, 10, lambda _, s: update_kl_controller(s, 12.0, 10), c)

  got = jax.jit(ten_updates)(ctl)
  assert float(got.value) == pytest.approx(0.3 * (1 + 0.2 * 10 / 100) ** 10, rel=1e-5)
  assert got.target == 6.0


def test_rejects_bad_config():
  with pytest.raises(ValueError, match="target"):
    adaptive_kl_controller(0.3, 0.0, 10.0)
  assert np.isclose(float(adaptive_kl_controller(0.3, 6.0, 10000.0).value), 0.3)
