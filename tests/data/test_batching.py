"""Collation into fixed-shape batches, by hand."""

import numpy as np
import pytest

from steptool_jax.data.batching import (bucket_length, collate_sft, collate_step_grained, iterate_batches,
                                        length_buckets)

PAD = 0
A = {"input_ids": [5, 6, 7], "action_mask": [0, 1, 1], "step_ids": [-1, 0, 0], "step_rewards": [0.5], "num_steps": 1}
B = {"input_ids": [5, 8, 9, 10, 11], "action_mask": [0, 1, 0, 1, 1], "step_ids": [-1, 0, -1, 2, 2],
     "step_rewards": [0.1, 0.2, 0.3], "num_steps": 3}


def test_length_buckets():
  assert length_buckets(300, min_len=64) == (64, 128, 256, 300)
  assert length_buckets(256, min_len=64) == (64, 128, 256)
  assert length_buckets(40, min_len=64) == (40,)
  assert bucket_length(129, (64, 128, 256)) == 256
  with pytest.raises(ValueError, match="expected a bucket >= 300 tokens, largest is 256"):
    bucket_length(300, (64, 128, 256))


def test_step_grained_batch_by_hand():
  batch = collate_step_grained([A, B], pad_id=PAD, length_buckets=(4, 8, 16), max_steps=4)
  assert batch["input_ids"].tolist() == [[5, 6, 7, 0, 0, 0, 0, 0], [5, 8, 9, 10, 11, 0, 0, 0]]
  assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0]]
  assert batch["action_mask"].tolist() == [[0, 1, 1, 0, 0, 0, 0, 0], [0, 1, 0, 1, 1, 0, 0, 0]]
  assert batch["step_ids"].tolist() == [[-1, 0, 0, -1, -1, -1, -1, -1], [-1, 0, -1, 2, 2, -1, -1, -1]]
  np.testing.assert_allclose(batch["step_rewards"], [[0.5, 0, 0, 0], [0.1, 0.2, 0.3, 0]])
  assert batch["num_steps"].tolist() == [1, 3]
  assert {k: v.dtype for k, v in batch.items()} == {
      "input_ids": np.int32, "attention_mask": np.int32, "action_mask": np.int32, "step_ids": np.int32,
      "step_rewards": np.float32, "num_steps": np.int32}


def test_padding_rows_keep_the_batch_shape():
  batch = collate_step_grained([A], pad_id=PAD, length_buckets=(4,), max_steps=2, batch_size=3)
  assert batch["input_ids"].shape == (3, 4)
  assert batch["attention_mask"][1:].sum() == 0 and batch["action_mask"][1:].sum() == 0
  assert batch["num_steps"].tolist() == [1, 0, 0]


def test_too_many_steps_for_the_slots():
  with pytest.raises(ValueError, match="max_steps: expected >= the 3 steps of a row, found 2"):
    collate_step_grained([B], pad_id=PAD, length_buckets=(8,), max_steps=2)


def test_sft_batch_by_hand():
  batch = collate_sft([{"input_ids": [3, 4], "loss_mask": [0, 1]}], pad_id=9, length_buckets=(4,))
  assert {k: v.tolist() for k, v in batch.items()} == {
      "input_ids": [[3, 4, 9, 9]], "attention_mask": [[1, 1, 0, 0]], "loss_mask": [[0, 1, 0, 0]]}


def test_iterate_batches_shards_and_remainder():
  examples = [{"input_ids": [i]} for i in range(10)]
  def first_ids(batch_list):
    return [example["input_ids"][0] for example in batch_list]
  plain = list(iterate_batches(examples, first_ids, batch_size=3))
  assert plain == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
  assert list(iterate_batches(examples, first_ids, batch_size=3, drop_remainder=False))[-1] == [9]
  shards = [sum(iterate_batches(examples, first_ids, batch_size=1, seed=7, shard_index=i, num_shards=2), [])
            for i in range(2)]
  assert sorted(shards[0] + shards[1]) == list(range(10)) and not set(shards[0]) & set(shards[1])
  assert sorted(sum(iterate_batches(examples, first_ids, batch_size=5, seed=3), [])) == list(range(10))
