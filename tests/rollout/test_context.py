"""The policy's context: BOS + segments, cut from the left like a training row's context."""

import pytest

from steptool_jax.rollout.context import encode_texts, policy_context
from tests.tiny_tokenizer import tiny_tokenizer


def test_context_is_bos_then_segments():
  assert policy_context([[10, 11], [12], [13, 14]], bos_id=1, max_context_len=10) == [1, 10, 11, 12, 13, 14]
  assert policy_context([[10, 11], [12]], bos_id=None, max_context_len=10) == [10, 11, 12]


def test_context_keeps_bos_and_the_newest_tokens():
  # 5 body tokens, room for 3 after the BOS: the oldest two go.
  assert policy_context([[10, 11], [12], [13, 14]], bos_id=1, max_context_len=4) == [1, 12, 13, 14]
  assert policy_context([[10, 11], [12], [13, 14]], bos_id=None, max_context_len=2) == [13, 14]
  assert policy_context([[10, 11]], bos_id=1, max_context_len=1) == [1]


def test_context_rejects_a_non_positive_limit():
  with pytest.raises(ValueError, match="max_context_len"):
    policy_context([[1]], bos_id=None, max_context_len=0)


def test_encode_texts_adds_no_special_tokens():
  tokenizer = tiny_tokenizer()
  texts = ["Action: f\n", "Function:\n{}"]
  assert encode_texts(tokenizer, texts) == [tokenizer.encode(t, add_special_tokens=False) for t in texts]
  assert encode_texts(tokenizer, []) == []
