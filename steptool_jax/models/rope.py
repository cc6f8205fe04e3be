"""Rotary position embeddings: inverse frequencies (plain, `linear`, `llama3`) and their application.

The rotation is the "rotate half" layout of the Hugging Face checkpoints: the head
dimension is split in two halves that form the (real, imaginary) parts, so imported
q/k weights need no permutation.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from steptool_jax.models.config import ModelConfig


def inverse_frequencies(config: ModelConfig) -> np.ndarray:
  """`[head_dim // 2]` float32 inverse frequencies, with the config's RoPE scaling."""
  dim = config.head_dim
  inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
  scaling = config.rope_scaling
  if scaling is None:
    pass
  elif scaling.kind == "linear":
    inv_freq = inv_freq / scaling.factor
  elif scaling.kind == "llama3":
    # Wavelengths longer than the original context are stretched by `factor`, shorter than
    # original/high_freq_factor are kept, and the band in between is blended linearly in 1/wavelength.
    old_len = scaling.original_max_position_embeddings
    low_wavelen = old_len / scaling.low_freq_factor
    high_wavelen = old_len / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    smooth = (old_len / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor)
    blended = (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq
    inv_freq = np.where(wavelen > low_wavelen, inv_freq / scaling.factor,
                        np.where(wavelen < high_wavelen, inv_freq, blended))
  return inv_freq.astype(np.float32)


def apply_rope(x: jnp.ndarray, positions: jnp.ndarray, inv_freq: np.ndarray) -> jnp.ndarray:
  """Rotates `x [B, T, N, D]` by the angles `positions [B, T] * inv_freq`.

  Angles are computed in float32 (bf16 positions would lose integer precision past 256),
  then cos/sin are cast to `x.dtype` before the rotation, as the reference implementation does.
  """
  angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [B, T, D/2]
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # [B, T, 1, D]
  cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return x * cos + rotated * sin
