"""The value head: a linear map from the trunk's final hidden state to a scalar value.

It has its own small params subtree (`variables["value_head"]`), so the optimiser can train
it together with the LoRA adapters while the base stays frozen.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class ValueHead(nn.Module):
  """`[..., embed] -> [...]` float32 values, with optional dropout on the input.

  Starts at zero (zero kernel and bias): the first advantages are then the plain returns,
  and the head cannot inject noise into the shared trunk's early updates.
  """
  dropout_rate: float = 0.0
  deterministic: bool = True

  @nn.compact
  def __call__(self, hidden: jnp.ndarray) -> jnp.ndarray:
    h = hidden.astype(jnp.float32)
    if self.dropout_rate > 0.0:
      h = nn.Dropout(self.dropout_rate)(h, deterministic=self.deterministic)
    kernel = self.param("kernel", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                        (h.shape[-1],), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (), jnp.float32)
    return jnp.einsum("...e,e->...", h, kernel) + bias
