"""Flax Llama-family policy with value head, LoRA, HF import/export and generation."""
