"""Model FLOPs of a training step, and the model-FLOPs utilisation (MFU) estimate.

Counted like PaLM's MFU: the FLOPs the model needs, not what the hardware ran (no
rematerialisation counted), over padded tokens (padding costs compute too). Per token of
a `[rows, seq_len]` batch, one forward pass costs

    forward = 2 * N_mm + 2 * L * H * D * seq_len

where `N_mm` counts the weights that take part in matmuls (every layer's projections plus
the LM head; the embedding lookup is a gather and norms are elementwise), and the second
term is attention's `QK^T` and `PV` (2 FLOPs per multiply-add, `2 * L * H * D * seq_len`
each, halved by the causal mask). A backward pass costs twice a forward for full
fine-tuning; with LoRA the frozen weights need activation gradients but no weight
gradients, so one forward's worth, plus `6 * adapter parameters` per token for the adapters.

A PPO update on a batch of `tokens` padded tokens then costs

    2 * forward * tokens                             rollout statistics: policy + reference
  + epochs * (forward + backward) * tokens           the PPO passes

and an SFT step `(forward + backward) * tokens`. The value head and the log-softmax are
left out (O(hidden) and O(vocab) per token, next to O(N_mm)).

MFU = FLOPs / (seconds * devices * peak dense bf16 FLOP/s of one device). The peak comes
from `log.peak_tflops`, else from the table below; unknown devices (CPUs) give no MFU.
"""

from __future__ import annotations

import jax

from steptool_jax.models.config import LoraConfig, ModelConfig, LORA_TARGETS

# device_kind substring -> (dense bf16 TFLOP/s, HBM GB/s) per device, from the vendors' data
# sheets; first match wins. The trainer's MFU and the benchmarks' roofline numbers use it.
DEVICE_SPECS: tuple[tuple[str, float, float], ...] = (
    ("H200", 989.0, 4800.0),
    ("H100 PCIe", 756.0, 2000.0),
    ("H100", 989.0, 3350.0),  # SXM
    ("A100-SXM4-80GB", 312.0, 2039.0),
    ("A100", 312.0, 1555.0),
    ("L4", 121.0, 300.0),
    ("TPU v6", 918.0, 1640.0),
    ("TPU v5p", 459.0, 2765.0),
    ("TPU v5 lite", 197.0, 819.0),
    ("TPU v5e", 197.0, 819.0),
    ("TPU v4", 275.0, 1228.0),
)


def device_peaks(device: jax.Device | None = None) -> tuple[float | None, float | None]:
  """(peak dense bf16 FLOP/s, HBM bytes/s) of one device, or (None, None) when unknown (CPUs)."""
  kind = (device or jax.devices()[0]).device_kind.lower()
  for name, tflops, gbps in DEVICE_SPECS:
    if name.lower() in kind:
      return tflops * 1e12, gbps * 1e9
  return None, None


def matmul_params(config: ModelConfig) -> int:
  """Weights used in matmuls: layers plus the LM head (a tied embedding counts once, as the head)."""
  e, layers = config.hidden_size, config.num_layers
  total = config.num_params() - config.vocab_size * e - (2 * layers + 1) * e  # minus embedding gather and norms
  if config.tie_word_embeddings:
    total += config.vocab_size * e
  return total


def lora_params(config: ModelConfig, lora: LoraConfig) -> int:
  """Adapter parameters: `rank * (fan_in + fan_out)` per targeted projection and layer."""
  e, f = config.hidden_size, config.intermediate_size
  q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
  shapes = {"q_proj": (e, q), "k_proj": (e, kv), "v_proj": (e, kv), "o_proj": (q, e),
            "gate_proj": (e, f), "up_proj": (e, f), "down_proj": (f, e)}
  assert set(shapes) == set(LORA_TARGETS)
  return config.num_layers * sum(lora.rank * sum(shapes[t]) for t in lora.targets)


def forward_flops_per_token(config: ModelConfig, seq_len: int) -> float:
  attention = 2 * config.num_layers * config.num_heads * config.head_dim * seq_len
  return 2.0 * matmul_params(config) + attention


def train_flops_per_token(config: ModelConfig, seq_len: int, lora: LoraConfig | None) -> float:
  """Forward + backward of one token."""
  forward = forward_flops_per_token(config, seq_len)
  if lora is None:
    return 3.0 * forward
  return 2.0 * forward + 6.0 * lora_params(config, lora)


def ppo_update_flops(config: ModelConfig, lora: LoraConfig | None, *, rows: int, seq_len: int, epochs: int) -> float:
  tokens = rows * seq_len
  forward = forward_flops_per_token(config, seq_len)
  return tokens * (2.0 * forward + epochs * train_flops_per_token(config, seq_len, lora))


def sft_step_flops(config: ModelConfig, lora: LoraConfig | None, *, rows: int, seq_len: int) -> float:
  return rows * seq_len * train_flops_per_token(config, seq_len, lora)


def peak_flops_per_device(override_tflops: float = 0.0, device: jax.Device | None = None) -> float | None:
  """Dense bf16 FLOP/s of one device: the override, the table, or None when unknown."""
  if override_tflops > 0:
    return override_tflops * 1e12
  return device_peaks(device)[0]


def mfu(flops: float, seconds: float, num_devices: int, peak_per_device: float | None) -> float | None:
  if peak_per_device is None or seconds <= 0:
    return None
  return flops / (seconds * num_devices * peak_per_device)
