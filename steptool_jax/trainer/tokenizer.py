"""The tokenizer of a run: the built-in one, or a local Hugging Face tokenizer directory."""

from __future__ import annotations

import os
from typing import Any

import ml_collections


def load_tokenizer(config: ml_collections.ConfigDict) -> Any:
  """`config.tokenizer`: "builtin", a directory, or "" for the model directory (`model.path`)."""
  name = config.tokenizer or config.model.path
  if name == "builtin":
    from steptool_jax.envs.builtin_tokenizer import load_tokenizer as builtin  # noqa: PLC0415
    return builtin()
  if not name:
    raise ValueError("tokenizer: expected 'builtin' or a tokenizer directory (model.path is not set either)")
  from transformers import AutoTokenizer  # noqa: PLC0415 (slow import, only for real models)
  path = os.path.expanduser(name)
  if not os.path.isdir(path):
    raise ValueError(f"tokenizer: expected a local tokenizer directory, found nothing at {path}")
  return AutoTokenizer.from_pretrained(path, local_files_only=True)
