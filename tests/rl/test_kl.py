"""KL penalty estimators against their formulas and numbers worked by hand."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from steptool_jax.rl.kl import KL_PENALTIES, LOW_VAR_KL_CLIP, kl_penalty

penalty = jax.jit(kl_penalty, static_argnames=("kind",))


def test_per_token_estimators_by_hand():
  logp = np.array([[-1.0, -2.0, -0.5]])
  ref = np.array([[-1.5, -1.0, -0.5]])   # d = logp - ref = .5, -1, 0
  np.testing.assert_allclose(penalty(logp, ref, "kl"), [[0.5, -1.0, 0.0]])
  np.testing.assert_allclose(penalty(logp, ref, "abs"), [[0.5, 1.0, 0.0]])
  np.testing.assert_allclose(penalty(logp, ref, "mse"), [[0.125, 0.5, 0.0]])
  # k3 = exp(-d) + d - 1
  want = [[math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1 - 1, 0.0]]
  np.testing.assert_allclose(penalty(logp, ref, "low_var_kl"), want, rtol=1e-6, atol=1e-7)


def test_low_var_kl_is_clipped():
  assert float(penalty(np.array(-30.0), np.array(0.0), "low_var_kl")) == LOW_VAR_KL_CLIP


def test_rejects_unknown_kind():
  with pytest.raises(ValueError, match="kl_penalty"):
    kl_penalty(np.zeros(2), np.zeros(2), "k2")
  assert "low_var_kl" in KL_PENALTIES and "full" not in KL_PENALTIES
