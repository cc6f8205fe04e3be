"""Parity with Hugging Face's PyTorch Llama/Qwen2: import, export, greedy generation."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402

from steptool_jax.models import SamplingConfig, generate_with_policy, left_pad, load_pretrained, save_pretrained  # noqa: E402
from steptool_jax.models import hf_io  # noqa: E402
from tests.models.conftest import VOCAB  # noqa: E402
from tests.models.hf_reference import hf_logits  # noqa: E402

pytestmark = pytest.mark.torch


def padded_batch(padding: str) -> tuple[np.ndarray, np.ndarray]:
  """Three rows of 9 tokens: one full, two with 3 and 5 padding slots on the given side."""
  rng = np.random.default_rng(0)
  ids = rng.integers(3, VOCAB, size=(3, 9)).astype(np.int32)
  mask = np.ones_like(ids)
  for row, pad in ((1, 3), (2, 5)):
    if padding == "right":
      mask[row, 9 - pad:] = 0
    else:
      mask[row, :pad] = 0
  ids[mask == 0] = 0
  return ids, mask


@pytest.mark.parametrize("padding", ["right", "left"])
def test_imported_logits_equal_hf(hf_model, padding):
  policy = load_pretrained(hf_model.path, dtype="float32")
  ids, mask = padded_batch(padding)
  ours = np.asarray(policy.logits(ids, mask))
  ref = hf_logits(hf_model.model, ids, mask)
  real = mask.astype(bool)
  assert ref[real].std() > 0.3  # the comparison is not between two near-zero tensors
  np.testing.assert_allclose(ours[real], ref[real], atol=1e-4, rtol=1e-4)


def test_export_loads_back_in_transformers(hf_model, tmp_path):
  policy = load_pretrained(hf_model.path, dtype="float32")
  out = save_pretrained(policy, tmp_path / "export", dtype="float32")
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  assert type(reloaded) is type(hf_model.model)
  assert reloaded.config.tie_word_embeddings == hf_model.model.config.tie_word_embeddings
  assert reloaded.config.rope_parameters == hf_model.model.config.rope_parameters
  ids, mask = padded_batch("right")
  real = mask.astype(bool)
  np.testing.assert_allclose(hf_logits(reloaded, ids, mask)[real], hf_logits(hf_model.model, ids, mask)[real],
                             atol=1e-5, rtol=1e-5)


def test_sharded_export_round_trip(hf_llama, tmp_path):
  policy = load_pretrained(hf_llama.path, dtype="float32")
  out = save_pretrained(policy, tmp_path / "sharded", dtype="float32", max_shard_bytes=40_000)
  files = sorted(p.name for p in out.glob("model-*.safetensors"))
  assert len(files) > 2 and (out / hf_io.INDEX_FILE).is_file()
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  ids, mask = padded_batch("left")
  real = mask.astype(bool)
  np.testing.assert_allclose(hf_logits(reloaded, ids, mask)[real], hf_logits(hf_llama.model, ids, mask)[real],
                             atol=1e-5, rtol=1e-5)
  again = load_pretrained(out, dtype="float32")
  np.testing.assert_array_equal(np.asarray(again.logits(ids, mask)), np.asarray(policy.logits(ids, mask)))


def test_greedy_generation_equals_hf_generate(hf_model):
  policy = load_pretrained(hf_model.path, dtype="float32")
  prompts = [[1, 17, 33, 90, 41, 5], [1, 64, 8], [1, 99, 23, 23, 12]]
  ids, mask = left_pad(prompts, pad_id=0)
  new = 10
  ours = generate_with_policy(policy, ids, mask, jax.random.key(0),
                              SamplingConfig(max_new_tokens=new, eos_ids=(2,), pad_id=0))
  with torch.no_grad():
    ref = hf_model.model.generate(
        input_ids=torch.tensor(np.asarray(ids), dtype=torch.long), attention_mask=torch.tensor(np.asarray(mask)),
        do_sample=False, max_new_tokens=new, pad_token_id=0, eos_token_id=2,
        return_dict_in_generate=True, output_logits=True)
  ref_tokens = ref.sequences[:, ids.shape[1]:].numpy()
  ref_tokens = np.pad(ref_tokens, ((0, 0), (0, new - ref_tokens.shape[1])))  # HF stops early when all rows end
  np.testing.assert_array_equal(np.asarray(ours.tokens), ref_tokens)
  # Log-probs of the chosen tokens under HF's raw next-token logits.
  ref_logp = np.stack([torch.log_softmax(step.float(), -1).numpy() for step in ref.logits], axis=1)
  steps = ref_logp.shape[1]
  ref_chosen = np.take_along_axis(ref_logp, ref_tokens[:, :steps, None], axis=-1)[..., 0]
  alive = np.arange(steps)[None, :] < np.asarray(ours.lengths)[:, None]
  np.testing.assert_allclose(np.asarray(ours.logprobs)[:, :steps][alive], ref_chosen[alive], atol=1e-4)
