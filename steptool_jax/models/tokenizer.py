"""The tokenizer of a run or an evaluation: one loader, one meaning of each name.

    load_tokenizer(name, model_path)

* `"builtin"`: the built-in environment's tokenizer (the tiny models').
* `""`: the model's own: the tokenizer files of the Hugging Face directory `model_path`, or
  the tokenizer and chat template inside its GGUF file.
* anything else: a local tokenizer directory.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

BUILTIN = "builtin"


def load_tokenizer(name: str, model_path: str = "", *, field: str = "tokenizer") -> Any:
  """The tokenizer `name` means (module docstring); errors are prefixed with `field`."""
  if name == BUILTIN:
    from steptool_jax.envs.builtin_tokenizer import load_tokenizer as builtin  # noqa: PLC0415
    return builtin()
  path_text = name or model_path
  if not path_text:
    raise ValueError(f"{field}: expected 'builtin' or a tokenizer directory (no model path to take one from)")
  path = pathlib.Path(os.path.expanduser(path_text))
  from steptool_jax.models import gguf_io  # noqa: PLC0415
  if gguf_io.is_gguf(path):  # a file, or a directory holding one: its tokenizer is inside
    return gguf_io.load_gguf_tokenizer(path)
  if not path.is_dir():
    raise ValueError(f"{field}: expected a local tokenizer directory, found nothing at {path}")
  if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
    raise ValueError(f"{field}: {path} has no tokenizer files (tokenizer.json, tokenizer_config.json); pass"
                     " --config.tokenizer=builtin or a tokenizer directory")
  from transformers import AutoTokenizer  # noqa: PLC0415 (slow import, only for real models)
  return AutoTokenizer.from_pretrained(path, local_files_only=True)
