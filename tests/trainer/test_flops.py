"""Model FLOPs of a tiny config counted by hand, the device table, and MFU."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from flax import linen as nn

from steptool_jax.models.config import LoraConfig, tiny
from steptool_jax.models.policy import abstract_variables
from steptool_jax.trainer import flops

# tiny(vocab 128): hidden 64, MLP 128, 2 layers, 4 query heads and 2 key-value heads of 16.
CONFIG = tiny(vocab_size=128)
# Per layer: q 64x64 + k 64x32 + v 64x32 + o 64x64 = 12288, MLP 3 x 64x128 = 24576 -> 36864.
LAYER_MATMUL = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64 + 3 * 64 * 128
HEAD = 128 * 64
MATMUL = 2 * LAYER_MATMUL + HEAD  # 81920
SEQ = 10
ATTENTION = 2 * 2 * 4 * 16 * SEQ  # 2 * layers * heads * head_dim * seq_len
FORWARD = 2 * MATMUL + ATTENTION  # per token: 166400


def test_matmul_params_by_hand():
  assert LAYER_MATMUL == 36864 and MATMUL == 81920
  assert flops.matmul_params(CONFIG) == MATMUL
  # A tied embedding is the LM head: counted once, the same matmul.
  assert flops.matmul_params(CONFIG.replace(tie_word_embeddings=True)) == MATMUL


def test_forward_flops_per_token_by_hand():
  assert FORWARD == 166400
  assert flops.forward_flops_per_token(CONFIG, SEQ) == FORWARD


@pytest.mark.parametrize("targets, expected", [
    # rank 4 x (fan_in + fan_out), per layer: q 4x128, k 4x96, v 4x96, o 4x128, gate/up/down 4x192 each
    (None, 2 * (512 + 384 + 384 + 512 + 3 * 768)),
    (("q_proj", "v_proj"), 2 * (512 + 384)),
])
def test_lora_params_by_hand(targets, expected):
  lora = LoraConfig(rank=4, alpha=8.0) if targets is None else LoraConfig(rank=4, alpha=8.0, targets=targets)
  assert flops.lora_params(CONFIG, lora) == expected


def test_lora_params_equal_the_adapter_variables():
  """The adapters' parameter count from the real variables (an independent count)."""
  lora = LoraConfig(rank=4, alpha=8.0, targets=("q_proj", "k_proj", "down_proj"))
  adapters = nn.unbox(abstract_variables(CONFIG, lora)["lora"])
  assert flops.lora_params(CONFIG, lora) == sum(int(np.prod(x.shape)) for x in jax.tree.leaves(adapters))


def test_train_and_update_flops_by_hand():
  lora = LoraConfig(rank=4, alpha=8.0, targets=("q_proj", "v_proj"))
  adapters = 2 * (512 + 384)
  assert flops.train_flops_per_token(CONFIG, SEQ, None) == 3 * FORWARD
  assert flops.train_flops_per_token(CONFIG, SEQ, lora) == 2 * FORWARD + 6 * adapters
  tokens = 4 * SEQ
  # Two scoring forwards (policy, reference), then `epochs` forward + backward passes.
  assert flops.ppo_update_flops(CONFIG, None, rows=4, seq_len=SEQ, epochs=2) == tokens * (2 + 2 * 3) * FORWARD
  assert flops.ppo_update_flops(CONFIG, None, rows=4, seq_len=SEQ, epochs=2) == 53_248_000
  assert flops.ppo_update_flops(CONFIG, lora, rows=4, seq_len=SEQ, epochs=3) == tokens * (
      2 * FORWARD + 3 * (2 * FORWARD + 6 * adapters))
  assert flops.sft_step_flops(CONFIG, None, rows=4, seq_len=SEQ) == tokens * 3 * FORWARD
  assert flops.sft_step_flops(CONFIG, lora, rows=4, seq_len=SEQ) == tokens * (2 * FORWARD + 6 * adapters)


@dataclasses.dataclass
class FakeDevice:
  device_kind: str


@pytest.mark.parametrize("kind, expected", [
    ("NVIDIA H200", (989e12, 4800e9)),
    ("NVIDIA H100 PCIe", (756e12, 2000e9)),  # before the SXM entry that would also match
    ("NVIDIA H100 80GB HBM3", (989e12, 3350e9)),
    ("NVIDIA A100-SXM4-80GB", (312e12, 2039e9)),
    ("NVIDIA A100-PCIE-40GB", (312e12, 1555e9)),
    ("TPU v5 lite", (197e12, 819e9)),
    ("TPU v4", (275e12, 1228e9)),
    ("cpu", (None, None)),
])
def test_device_peaks(kind, expected):
  assert flops.device_peaks(FakeDevice(kind)) == expected


def test_peak_flops_per_device():
  assert flops.peak_flops_per_device(100.0, FakeDevice("cpu")) == 1e14  # the override wins
  assert flops.peak_flops_per_device(0.0, FakeDevice("TPU v4")) == 275e12
  assert flops.peak_flops_per_device(0.0, FakeDevice("cpu")) is None


def test_mfu():
  assert flops.mfu(1e12, 2.0, 4, 1e12) == 0.125
  assert flops.mfu(1e12, 2.0, 4, None) is None
  assert flops.mfu(1e12, 0.0, 4, 1e12) is None
