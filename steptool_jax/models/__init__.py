"""Flax Llama-family policy with value head, LoRA, HF and GGUF import, HF export and generation.

    policy = load_pretrained("/ckpt/Llama-3.1-8B", dtype="bfloat16")  # or a .gguf file
    logits = policy.logits(input_ids, attention_mask)          # [B, T, V] float32
    logp = policy.token_logprobs(input_ids, attention_mask)    # [B, T], aligned with input_ids
"""

from steptool_jax.models.config import (
    LORA_TARGETS, PRESETS, LoraConfig, ModelConfig, RopeScaling, preset)
from steptool_jax.models.generate import (
    Generation, SamplingConfig, extend_and_generate, generate, generate_with_policy, left_pad,
    stop_sequences_from_strings)
from steptool_jax.models.gguf_io import load_gguf_tokenizer
from steptool_jax.models.llama import CausalLM, KVCache, init_cache
from steptool_jax.models.logprobs import chunked_token_logprobs
from steptool_jax.models.lora import merge_lora
from steptool_jax.models.policy import (
    Policy, TokenScores, abstract_variables, init_lora_params, init_policy, init_value_head_params,
    score_tokens, token_values, trunk_variables)
from steptool_jax.models.pretrained import load_pretrained, read_model_config, save_pretrained, variable_shardings
from steptool_jax.models.value_head import ValueHead

__all__ = [
    "CausalLM", "Generation", "KVCache", "LORA_TARGETS", "LoraConfig", "ModelConfig",
    "PRESETS", "Policy", "RopeScaling", "SamplingConfig", "TokenScores", "ValueHead",
    "abstract_variables", "chunked_token_logprobs", "extend_and_generate", "generate", "generate_with_policy",
    "init_cache", "init_lora_params", "init_policy", "init_value_head_params", "left_pad", "load_gguf_tokenizer", "load_pretrained",
    "merge_lora", "preset", "read_model_config", "save_pretrained", "score_tokens", "stop_sequences_from_strings",
    "token_values",
    "trunk_variables", "variable_shardings",
]
