"""Tokenising step-grained rows and conversations: masks and truncation checked by hand."""

import numpy as np
import pytest

from steptool_jax.data.records import Conversation, StepGrainedRow, Turn
from steptool_jax.data.tokenize import tokenize_conversation, tokenize_row, tokenize_rows
from steptool_jax.data.tsv import read_step_grained_tsv
from tests.tiny_tokenizer import tiny_tokenizer

BOS, EOS = 1, 2


class CharTokenizer:
  """One token per character (id = code point), so every array can be written by hand."""

  bos_token_id = BOS
  eos_token_id = EOS

  def __call__(self, texts, add_special_tokens):
    assert add_special_tokens is False  # segments must not get their own BOS
    return {"input_ids": [[ord(c) for c in text] for text in texts]}


class NoBosTokenizer(CharTokenizer):
  bos_token_id = None


def ids(text):
  return [ord(c) for c in text]


ROW = StepGrainedRow(prompts=("ab", "c"), responses=("XY", "Z"), rewards=(0.25, 1.0))


def test_hand_computed_masks():
  example = tokenize_row(ROW, CharTokenizer(), max_context_len=100, max_response_len=100)
  # <s> a b X Y c Z
  assert example.input_ids.tolist() == [BOS] + ids("abXYcZ")
  assert example.action_mask.tolist() == [0, 0, 0, 1, 1, 0, 1]
  assert example.step_ids.tolist() == [-1, -1, -1, 0, 0, -1, 1]
  assert example.step_rewards.tolist() == [0.25, 1.0]
  assert example.num_steps == 2
  assert (example.context_tokens_dropped, example.response_tokens_dropped, example.steps_dropped) == (0, 0, 0)
  assert example.input_ids.dtype == example.action_mask.dtype == example.step_ids.dtype == np.int32


def test_eos_after_every_action():
  example = tokenize_row(ROW, CharTokenizer(), max_context_len=100, max_response_len=100, eos_after_actions=True)
  assert example.input_ids.tolist() == [BOS] + ids("abXY") + [EOS] + ids("cZ") + [EOS]
  assert example.step_ids.tolist() == [-1, -1, -1, 0, 0, 0, -1, 1, 1]


def test_context_longer_than_the_limit_is_cut_from_the_left_keeping_bos():
  # Context <s> a b X Y c (6 tokens) -> <s> + last 3.
  example = tokenize_row(ROW, CharTokenizer(), max_context_len=4, max_response_len=100)
  assert example.input_ids.tolist() == [BOS] + ids("XYcZ")
  assert example.step_ids.tolist() == [-1, 0, 0, -1, 1]
  assert (example.context_tokens_dropped, example.steps_dropped) == (2, 0)


def test_a_step_cut_away_entirely_is_counted():
  example = tokenize_row(ROW, CharTokenizer(), max_context_len=2, max_response_len=100)
  assert example.input_ids.tolist() == [BOS] + ids("cZ")
  assert example.step_ids.tolist() == [-1, -1, 1]
  assert (example.context_tokens_dropped, example.steps_dropped) == (4, 1)
  assert example.step_rewards.tolist() == [0.25, 1.0]  # the slot stays; its reward lands nowhere


def test_response_longer_than_the_limit_is_cut_from_the_right():
  row = StepGrainedRow(("p",), ("WXYZ",), (1.0,))
  example = tokenize_row(row, CharTokenizer(), max_context_len=10, max_response_len=2, eos_after_actions=True)
  assert example.input_ids.tolist() == [BOS] + ids("pWX")
  assert example.step_ids.tolist() == [-1, -1, 0, 0]
  assert example.response_tokens_dropped == 3  # Y, Z and the EOS


def test_single_step_without_bos():
  row = StepGrainedRow(("pq",), ("A",), (0.5,))
  example = tokenize_row(row, CharTokenizer(), max_context_len=1, max_response_len=1, add_bos=False)
  assert example.input_ids.tolist() == ids("qA")
  assert example.action_mask.tolist() == [0, 1]
  assert example.context_tokens_dropped == 1


def test_position_zero_is_never_an_action():
  row = StepGrainedRow(("", "c"), ("XY", "Z"), (0.5, 1.0))
  example = tokenize_row(row, CharTokenizer(), max_context_len=10, max_response_len=10, add_bos=False)
  assert example.input_ids.tolist() == ids("XYcZ")
  assert example.step_ids.tolist() == [-1, 0, -1, 1]


def test_missing_special_tokens_are_configuration_errors():
  with pytest.raises(ValueError, match="add_bos: the tokenizer has no BOS token"):
    tokenize_row(ROW, NoBosTokenizer(), max_context_len=10, max_response_len=10)
  with pytest.raises(ValueError, match="max_response_len: expected >= 1, found 0"):
    tokenize_row(ROW, CharTokenizer(), max_context_len=10, max_response_len=0)


def test_conversation_loss_mask_by_hand():
  conversation = Conversation("c", "q", (Turn("system", "s"), Turn("user", "u"), Turn("assistant", "a"),
                                         Turn("function", "f"), Turn("assistant", "b")))
  example = tokenize_conversation(conversation, "toolllama", CharTokenizer(), max_context_len=100,
                                  max_response_len=100)
  text = "System:\ns\nUser:\nu\nAssistant:\na\nFunction:\nf\nAssistant:\nb\n"
  assert example.input_ids.tolist() == [BOS] + ids(text)
  expected = np.zeros(len(text) + 1, np.int32)
  first = 1 + text.index("a\n")
  expected[first:first + 2] = 1
  expected[-2:] = 1
  assert example.loss_mask.tolist() == expected.tolist()


def test_tiny_tokenizer_masks_decode_to_the_actions(reference_dir):
  tokenizer = tiny_tokenizer()
  rows = read_step_grained_tsv(reference_dir / "toolllama_step_grained_for_ppo.tsv")[:3]
  examples = tokenize_rows(rows, tokenizer, max_context_len=100_000, max_response_len=100_000)
  for row, example in zip(rows, examples):
    assert example.input_ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(example.input_ids[1:]) == "".join(p + r for p, r in zip(row.prompts, row.responses))
    for step, response in enumerate(row.responses):
      assert tokenizer.decode(example.input_ids[example.step_ids == step]) == response
    assert np.array_equal(example.action_mask, (example.step_ids >= 0).astype(np.int32))
  assert tokenize_row(rows[1], tokenizer, max_context_len=100_000, max_response_len=100_000).input_ids.tolist() == \
      examples[1].input_ids.tolist()


def test_tiny_tokenizer_truncation_bounds(reference_dir):
  tokenizer = tiny_tokenizer()
  rows = read_step_grained_tsv(reference_dir / "toolllama_step_grained_for_ppo.tsv")
  for row, example in zip(rows, tokenize_rows(rows, tokenizer, max_context_len=200, max_response_len=16)):
    last = np.flatnonzero(example.step_ids == row.num_steps - 1)
    assert len(last) == min(16, len(tokenizer(row.responses[-1], add_special_tokens=False)["input_ids"]))
    assert example.context_tokens_dropped > 0 and last[0] == 200  # the context is exactly full
    assert len(example.input_ids) == last[-1] + 1
