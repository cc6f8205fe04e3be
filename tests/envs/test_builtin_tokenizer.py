"""The built-in tokenizer: loads offline, role markers are single tokens, every generated text
round-trips, the chat template matches the renderer, and the build is reproducible."""

import json

import pytest
from hypothesis import given, settings, strategies as st

from steptool_jax.data import render
from steptool_jax.data.sft import read_sft_conversations
from steptool_jax.data.tokenize import tokenize_row
from steptool_jax.data.tsv import read_step_grained_tsv
from steptool_jax.envs import builtin_tokenizer as bt
from steptool_jax.envs.generate import GenerateConfig, generate
from steptool_jax.envs.settings import EnvSettings
from steptool_jax.envs.tasks import SPLITS


@pytest.fixture(scope="module")
def tokenizer():
  return bt.load_tokenizer()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
  out = tmp_path_factory.mktemp("tok-data")
  generate(out, GenerateConfig(EnvSettings(num_tasks=60, seed=11, mistake_rate=0.3), template="toolllama", build_tfds=False))
  return out


def _encode(tokenizer, text):
  return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_special_tokens(tokenizer):
  assert (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token) == ("<pad>", "<s>", "</s>")
  assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
  for i, marker in enumerate(bt.ROLE_MARKERS, start=3):
    assert _encode(tokenizer, marker) == [i]
  assert 1000 < len(tokenizer) <= bt.VOCAB_SIZE


def test_digits_are_single_tokens(tokenizer):
  ids = _encode(tokenizer, "price 128.74")
  assert [tokenizer.decode([i]) for i in ids][-6:] == ["1", "2", "8", ".", "7", "4"]


def test_every_generated_text_round_trips_and_prompts_end_in_the_assistant_marker(tokenizer, generated):
  assistant = tokenizer.convert_tokens_to_ids("Assistant:\n")
  count = 0
  for split in SPLITS:
    for row in read_step_grained_tsv(generated / "step_grained" / f"{split}.tsv"):
      for prompt, response in zip(row.prompts, row.responses):
        prompt_ids, response_ids = _encode(tokenizer, prompt), _encode(tokenizer, response)
        assert tokenizer.decode(prompt_ids) == prompt and tokenizer.decode(response_ids) == response
        assert prompt_ids[-1] == assistant and assistant not in response_ids
        count += 1
    for line in (generated / "tasks" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
      text = json.dumps(json.loads(line), ensure_ascii=False)
      assert tokenizer.decode(_encode(tokenizer, text)) == text
  assert count > 100


def test_works_with_the_foundation_tokenisation(tokenizer, generated):
  """BOS at position 0, and the tokens of step s are exactly action s followed by EOS."""
  rows = read_step_grained_tsv(generated / "step_grained" / "train.tsv")[:20]
  for row in rows:
    example = tokenize_row(row, tokenizer, max_context_len=4096, max_response_len=512, add_bos=True,
                           eos_after_actions=True)
    assert example.input_ids[0] == tokenizer.bos_token_id and example.steps_dropped == 0
    for step, response in enumerate(row.responses):
      ids = example.input_ids[example.step_ids == step]
      assert tokenizer.decode(ids) == response + "</s>"
    assert example.action_mask.sum() == (example.step_ids >= 0).sum()


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_round_trips(tokenizer, text):
  assert tokenizer.decode(_encode(tokenizer, text)) == text


def test_chat_template_renders_like_the_toolllama_renderer(tokenizer, generated):
  conversations = read_sft_conversations(generated / "sft" / "train.json")
  assert conversations
  for conversation in conversations[:10]:
    messages = [{"role": turn.role, "content": turn.content} for turn in conversation.turns]
    segments = render.render_conversation(conversation, "toolllama")
    assert tokenizer.apply_chat_template(messages, tokenize=False) == "".join(text for text, _ in segments)
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
    marked = [i for i, m in zip(encoded["input_ids"], encoded["assistant_masks"]) if m]
    assert tokenizer.decode(marked) == "".join(text for text, is_action in segments if is_action)
  prompt = tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
  assert prompt.endswith("Begin!\n\nAssistant:\n")


def test_training_is_deterministic():
  texts = ["System:\nabc\nUser:\nfind 12 flights\nAssistant:\n", "Action: f\nAction Input: {\"a\": 1}\n"] * 50
  a, b = bt.train_tokenizer(texts, vocab_size=400), bt.train_tokenizer(texts, vocab_size=400)
  assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()


@pytest.mark.slow
def test_committed_tokenizer_is_what_the_build_makes(tokenizer):
  rebuilt = bt.train_tokenizer(bt.corpus())
  assert rebuilt.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str(), (
      "the environment's text changed since the tokenizer was built: run "
      "`python -m steptool_jax.envs build-tokenizer` (this changes token ids)")
