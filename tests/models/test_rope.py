"""RoPE inverse frequencies against transformers' own implementations."""

from __future__ import annotations

import numpy as np
import pytest

from steptool_jax.models import preset
from steptool_jax.models.rope import apply_rope, inverse_frequencies


@pytest.mark.parametrize("name", ["toolllama2_7b", "llama3_1_8b", "llama3_2_1b", "qwen2_7b"])
def test_inverse_frequencies_equal_transformers(name):
  pytest.importorskip("torch")
  import transformers  # noqa: PLC0415
  from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: PLC0415

  cfg = preset(name)
  hf_config = transformers.AutoConfig.for_model(**cfg.to_hf_config())
  kind = hf_config.rope_parameters["rope_type"]
  if kind == "default":
    expected = 1.0 / (cfg.rope_theta ** (np.arange(0, cfg.head_dim, 2) / cfg.head_dim))
  else:
    expected = ROPE_INIT_FUNCTIONS[kind](hf_config, None)[0].numpy()
  np.testing.assert_allclose(inverse_frequencies(cfg), expected, rtol=1e-6)


def test_linear_scaling_halves_every_frequency():
  plain = inverse_frequencies(preset("toolllama2_7b", rope_scaling=None))
  np.testing.assert_allclose(inverse_frequencies(preset("toolllama2_7b")), plain / 2, rtol=1e-7)


def test_rotation_by_hand():
  # head_dim 4: pairs (x0, x2) and (x1, x3) rotate by pos * inv_freq[0] and pos * inv_freq[1].
  inv_freq = np.array([0.5, 0.25], np.float32)
  x = np.array([1.0, 2.0, 3.0, 4.0], np.float32).reshape(1, 1, 1, 4)
  out = np.asarray(apply_rope(x, np.array([[2]]), inv_freq))[0, 0, 0]
  a, b = 2 * 0.5, 2 * 0.25
  expected = [1 * np.cos(a) - 3 * np.sin(a), 2 * np.cos(b) - 4 * np.sin(b),
              3 * np.cos(a) + 1 * np.sin(a), 4 * np.cos(b) + 2 * np.sin(b)]
  np.testing.assert_allclose(out, expected, rtol=1e-6)
