"""Linear projections with optional LoRA adapters, and merging adapters into the base weights.

A `Projection` owns its frozen kernel in the `params` collection and, when it is a LoRA
target, its adapter factors `a [in..., rank]` and `b [rank, out...]` in the separate
`lora` collection. Leaving the `lora` collection out of `apply` runs the base model: that
is how the reference policy is computed from the same weights, with no second copy.
`b` starts at zero, so a freshly initialised adapter leaves the base model unchanged.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from steptool_jax.models.config import LoraConfig

LORA_COLLECTION = "lora"

Initializer = Callable[..., jnp.ndarray]


def contract(x: jnp.ndarray, kernel: jnp.ndarray, num_contracted: int,
             preferred_element_type: Any = None) -> jnp.ndarray:
  """`x[..., *in] · kernel[*in, *out] -> [..., *out]` over the trailing `num_contracted` axes of x."""
  x_axes = tuple(range(x.ndim - num_contracted, x.ndim))
  k_axes = tuple(range(num_contracted))
  return jax.lax.dot_general(x, kernel, ((x_axes, k_axes), ((), ())),
                             preferred_element_type=preferred_element_type)


class Projection(nn.Module):
  """`y = x · W (+ b) (+ scale · dropout(x) · A · B)` with multi-axis inputs and outputs.

  Kernels keep the head structure (`[embed, heads, head_dim]` for q) so each axis carries a
  logical name for sharding.
  """
  in_features: tuple[int, ...]
  out_features: tuple[int, ...]
  in_axes: tuple[str, ...]
  out_axes: tuple[str, ...]
  use_bias: bool = False
  lora: LoraConfig | None = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Initializer = nn.initializers.normal(0.02)
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    n_in = len(self.in_features)
    kernel = self.param(
        "kernel", nn.with_logical_partitioning(self.kernel_init, self.in_axes + self.out_axes),
        self.in_features + self.out_features, self.param_dtype)
    x = x.astype(self.dtype)
    y = contract(x, kernel.astype(self.dtype), n_in)
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, self.out_axes),
                        self.out_features, self.param_dtype)
      y = y + bias.astype(self.dtype)
    if self.lora is not None and (self.is_initializing() or self.has_variable(LORA_COLLECTION, "a")):
      y = y + self._lora_delta(x, n_in)
    return y

  def _lora_delta(self, x: jnp.ndarray, n_in: int) -> jnp.ndarray:
    cfg = self.lora
    assert cfg is not None
    # Uniform(+-1/sqrt(fan_in)) for A, zeros for B: the usual LoRA start (output unchanged).
    a_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform",
                                              in_axis=tuple(range(n_in)), out_axis=-1)
    a_shape = self.in_features + (cfg.rank,)
    b_shape = (cfg.rank,) + self.out_features
    a = self.variable(
        LORA_COLLECTION, "a",
        nn.with_logical_partitioning(
            lambda: a_init(self.make_rng("params"), a_shape, self.param_dtype),
            self.in_axes + ("lora_rank",))).value
    b = self.variable(
        LORA_COLLECTION, "b",
        nn.with_logical_partitioning(lambda: jnp.zeros(b_shape, self.param_dtype),
                                     ("lora_rank",) + self.out_axes)).value
    if cfg.dropout > 0.0:
      x = nn.Dropout(cfg.dropout)(x, deterministic=self.deterministic)
    low_rank = contract(x, a.astype(self.dtype), n_in)
    return cfg.scale * contract(low_rank, b.astype(self.dtype), 1)


def merge_lora(params: Any, lora_params: Any, lora: LoraConfig) -> Any:
  """Base params with every adapter folded in: `kernel + scale · A · B` (for export).

  Works on stacked (scanned) layers: leading axes shared by `a`, `b` and the kernel are
  batch axes of the product.
  """
  flat = dict(flax.traverse_util.flatten_dict(flax.core.unfreeze(params)))
  adapters = flax.traverse_util.flatten_dict(flax.core.unfreeze(lora_params))
  for path, a in adapters.items():
    if path[-1] != "a":
      continue
    b = adapters[path[:-1] + ("b",)]
    kernel_path = path[:-1] + ("kernel",)
    if kernel_path not in flat:
      raise ValueError(f"lora: adapter {'/'.join(path[:-1])} has no base kernel to merge into")
    kernel = flat[kernel_path]
    n_lead = a.ndim + b.ndim - 2 - kernel.ndim
    lead = a.shape[:n_lead]
    a2 = a.reshape(lead + (-1, a.shape[-1])).astype(jnp.float32)
    b2 = b.reshape(lead + (b.shape[n_lead], -1)).astype(jnp.float32)
    delta = jnp.einsum("...ir,...ro->...io", a2, b2).reshape(kernel.shape)
    flat[kernel_path] = (kernel.astype(jnp.float32) + lora.scale * delta).astype(kernel.dtype)
  return flax.traverse_util.unflatten_dict(flat)
