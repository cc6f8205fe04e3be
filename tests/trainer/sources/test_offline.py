"""Fixed-data batches: rows in the seeded epoch order, a short last batch padded with empty
rows, one width for the whole global batch, process slices that concatenate to the
one-process batch, zero-row collates, and the sources built on the environment's data."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest

from steptool_jax.config.run import parse_run_config
from steptool_jax.trainer.sources.batches import SFT_KEYS, STEP_GRAINED_KEYS
from steptool_jax.trainer.sources.offline import (OfflineSource, pad_id_of, sft_collate, sft_source,
                                                  step_grained_collate, step_grained_source)
from tests.rollout.tiny_policy import builtin_tokenizer
from tests.trainer.fixtures import data_cache, tiny_run_config  # noqa: F401 (fixture)

SEED, BATCH, PAD, MAX_STEPS = 5, 4, 0, 3
BUCKETS = (16, 32, 64)
NUM_EXAMPLES = 10  # batches of 4, 4 and 2 rows
LONG = 40  # one example needs the 64-token bucket


def make_examples() -> list[dict]:
  """Step-grained examples of 5..16 tokens, except the one batch 0 puts at row 3, of LONG tokens."""
  order = np.random.default_rng([SEED, 0]).permutation(NUM_EXAMPLES)
  rng = np.random.default_rng(1)
  examples = []
  for i in range(NUM_EXAMPLES):
    length = LONG if i == order[3] else int(rng.integers(5, 17))
    steps = int(rng.integers(1, MAX_STEPS + 1))
    step_ids = np.full(length, -1)
    for s in range(steps):  # step s: two action tokens near the end
      step_ids[length - 2 * (steps - s): length - 2 * (steps - s) + 2] = s
    examples.append({"input_ids": rng.integers(1, 100, length).tolist(), "action_mask": (step_ids >= 0).astype(int),
                     "step_ids": step_ids, "step_rewards": rng.random(steps).tolist(), "num_steps": steps,
                     "index": i})
  return examples


EXAMPLES = make_examples()


def source(local_rows=slice(0, BATCH)) -> OfflineSource:
  return OfflineSource(keys=STEP_GRAINED_KEYS, examples=EXAMPLES,
                       lengths=np.array([len(e["input_ids"]) for e in EXAMPLES]),
                       collate=step_grained_collate(PAD, MAX_STEPS), batch_size=BATCH, seed=SEED, buckets=BUCKETS,
                       local_rows=local_rows)


def row_of(batch, row) -> dict:
  length = int(batch["attention_mask"][row].sum())
  return {"input_ids": batch["input_ids"][row, :length].tolist(), "num_steps": int(batch["num_steps"][row])}


def assert_empty_row(batch, row):
  assert not batch["attention_mask"][row].any() and not batch["action_mask"][row].any()
  assert (batch["input_ids"][row] == PAD).all() and (batch["step_ids"][row] == -1).all()
  assert batch["num_steps"][row] == 0 and not batch["step_rewards"][row].any()


def test_sizes():
  made = source()
  assert (made.num_rows, made.steps_per_epoch) == (NUM_EXAMPLES, math.ceil(NUM_EXAMPLES / BATCH))


@pytest.mark.parametrize("epoch", [0, 1, 4])
def test_batches_are_slices_of_the_seeded_epoch_order(epoch):
  made = source()
  order = np.random.default_rng([SEED, epoch]).permutation(NUM_EXAMPLES)
  seen = []
  for index in range(made.steps_per_epoch):
    batch, stats = made.batch(epoch, index)
    assert stats == {} and set(batch) == set(STEP_GRAINED_KEYS)
    for row, example_index in enumerate(order[index * BATCH:(index + 1) * BATCH]):
      example = EXAMPLES[example_index]
      assert row_of(batch, row) == {"input_ids": example["input_ids"], "num_steps": example["num_steps"]}
      np.testing.assert_array_equal(batch["step_rewards"][row, :example["num_steps"]],
                                    np.float32(example["step_rewards"]))
      seen.append(int(example_index))
  assert sorted(seen) == list(range(NUM_EXAMPLES))  # every row once per epoch


def test_the_short_last_batch_is_padded_with_empty_rows():
  batch, _ = source().batch(0, 2)
  assert batch["input_ids"].shape[0] == BATCH and batch["step_rewards"].shape == (BATCH, MAX_STEPS)
  assert batch["attention_mask"][:2].any(axis=1).all()
  for row in (2, 3):
    assert_empty_row(batch, row)


def test_the_width_is_chosen_from_the_whole_global_batch():
  """Batch 0 has its LONG row at row 3: the process holding rows 0-1 pads to 64 as well."""
  whole, _ = source().batch(0, 0)
  first_half, _ = source(slice(0, 2)).batch(0, 0)
  assert whole["input_ids"].shape[1] == first_half["input_ids"].shape[1] == 64
  assert first_half["attention_mask"].sum(axis=1).max() <= 16
  assert source().batch(0, 1)[0]["input_ids"].shape[1] == 16  # without it, the smallest bucket


@pytest.mark.parametrize("epoch, index", [(0, 0), (0, 1), (0, 2), (3, 2)])
def test_two_process_slices_concatenate_to_the_one_process_batch(epoch, index):
  whole, _ = source().batch(epoch, index)
  parts = [source(rows).batch(epoch, index)[0] for rows in (slice(0, 2), slice(2, 4))]
  for key in STEP_GRAINED_KEYS:
    np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


def test_a_process_without_real_rows_collates_padding_of_the_batch_width():
  """Rows 2-3 of the last batch (2 real rows) are padding only: zero examples, same shapes."""
  part, _ = source(slice(2, 4)).batch(0, 2)
  whole, _ = source().batch(0, 2)
  assert part["input_ids"].shape == (2, whole["input_ids"].shape[1])
  for row in (0, 1):
    assert_empty_row(part, row)


def test_collates_accept_zero_examples():
  batch = step_grained_collate(PAD, MAX_STEPS)([], 32, 2)
  assert {k: v.shape for k, v in batch.items()} == {
      "input_ids": (2, 32), "attention_mask": (2, 32), "action_mask": (2, 32), "step_ids": (2, 32),
      "step_rewards": (2, MAX_STEPS), "num_steps": (2,)}
  for row in (0, 1):
    assert_empty_row(batch, row)
  sft = sft_collate(PAD, "actions")([], 16, 3)
  assert {k: v.shape for k, v in sft.items()} == {k: (3, 16) for k in SFT_KEYS}
  assert not any(v.any() for v in sft.values())
  assert not sft_collate(PAD, "dialogue")([], 16, 3)["loss_mask"].any()


def test_batches_outside_the_epoch_are_refused():
  with pytest.raises(IndexError):
    source().batch(0, 3)


def test_sft_collate_loss_on_actions_or_the_dialogue():
  examples = [{"input_ids": [5, 6, 7, 8], "loss_mask": [0, 0, 1, 1]}, {"input_ids": [9, 10], "loss_mask": [0, 1]}]
  actions = sft_collate(PAD, "actions")(examples, 8, 3)
  np.testing.assert_array_equal(actions["loss_mask"], [[0, 0, 1, 1, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0], [0] * 8])
  dialogue = sft_collate(PAD, "dialogue")(examples, 8, 3)
  # Every real token with a predecessor is a target.
  np.testing.assert_array_equal(dialogue["loss_mask"], [[0, 1, 1, 1, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0], [0] * 8])
  np.testing.assert_array_equal(dialogue["input_ids"], actions["input_ids"])


def test_pad_id_of():
  assert pad_id_of(types.SimpleNamespace(pad_token_id=None)) == 0
  assert pad_id_of(types.SimpleNamespace(pad_token_id=3)) == 3


# --- the sources on the environment's data ----------------------------------------------------------


def test_step_grained_source_on_the_environment_data(data_cache):
  run = parse_run_config(tiny_run_config(data_cache))
  made = step_grained_source(run, builtin_tokenizer(), cache_dir=data_cache, local_rows=slice(0, run.batch.size))
  assert made.keys == STEP_GRAINED_KEYS and made.batch_size == run.batch.size and made.seed == run.seed
  assert made.steps_per_epoch == math.ceil(made.num_rows / run.batch.size) and made.num_rows > 0
  assert made.counters["path"].endswith("step_grained/train.tsv")
  most_steps = max(int(e["num_steps"]) for e in made.examples)
  assert made.counters["max_steps"] == most_steps
  assert made.buckets == (128,)  # min_bucket_len 128 = max_context_len + max_response_len: one bucket
  batch, _ = made.batch(0, 0)
  assert batch["input_ids"].shape == (run.batch.size, 128) and batch["step_rewards"].shape == (run.batch.size,
                                                                                                 most_steps)
  with pytest.raises(ValueError, match=rf"^data.max_steps: expected >= the {most_steps} steps of the longest row of"
                                       rf" .*train.tsv, found 1$"):
    step_grained_source(parse_run_config(tiny_run_config(data_cache, data__max_steps=1)), builtin_tokenizer(),
                        cache_dir=data_cache, local_rows=slice(0, run.batch.size))


def test_sft_source_on_the_environment_data(data_cache):
  run = parse_run_config(tiny_run_config(data_cache, "sft", data__sft_loss_on="dialogue"))
  made = sft_source(run, builtin_tokenizer(), cache_dir=data_cache, local_rows=slice(0, run.batch.size))
  assert made.keys == SFT_KEYS and made.counters["path"].endswith("sft/train.json")
  batch, _ = made.batch(0, 0)
  expected = batch["attention_mask"].copy()
  expected[:, 0] = 0
  np.testing.assert_array_equal(batch["loss_mask"], expected)


def test_a_data_file_without_usable_rows(data_cache, tmp_path):
  path = tmp_path / "empty.tsv"
  path.write_text("prompt\tresponse\treward\n")
  run = parse_run_config(tiny_run_config(data_cache, data__train_path=str(path)))
  with pytest.raises(ValueError, match=rf"^data.train_path: no usable rows in {path}"):
    step_grained_source(run, builtin_tokenizer(), cache_dir=tmp_path / "cache", local_rows=slice(0, 4))
