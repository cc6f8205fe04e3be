"""Hugging Face's PyTorch model as the independent reference of the model tests."""

from __future__ import annotations

import numpy as np


def hf_logits(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """`model`'s float32 logits for padded rows. HF's forward numbers positions 0..T-1 whatever
  the padding; its `generate` (and our forward) count real tokens only, so those position ids
  are passed, which makes left-padded rows comparable."""
  import torch  # noqa: PLC0415 (the torch-parity extra)

  positions = np.maximum(np.cumsum(mask, axis=-1) - 1, 0)
  with torch.no_grad():
    out = model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                position_ids=torch.tensor(positions, dtype=torch.long))
  return out.logits.float().numpy()
