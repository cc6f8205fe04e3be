"""Cached tokenised datasets: same arrays as the direct path, no re-tokenising on a re-run."""

import os
import shutil

import numpy as np
import pytest

from steptool_jax.data import pipeline
from steptool_jax.data.batching import collate_step_grained, iterate_batches, length_buckets
from steptool_jax.data.errors import DataError
from steptool_jax.data.sft import read_sft_conversations
from steptool_jax.data.tokenize import tokenize_conversation, tokenize_rows
from steptool_jax.data.tsv import read_step_grained_tsv
from tests.tiny_tokenizer import tiny_tokenizer

OPTIONS = dict(max_context_len=300, max_response_len=40)
TSV = "toolllama_step_grained_for_ppo.tsv"


@pytest.fixture
def tsv(reference_dir, tmp_path):
  path = tmp_path / "rows.tsv"
  shutil.copy(reference_dir / TSV, path)
  return path


def _forbid_tokenising(monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError("tokenised again although the cache holds this file")
  monkeypatch.setattr(pipeline, "tokenize_rows", fail)


def test_dataset_matches_direct_tokenisation_and_counts(tsv, tmp_path):
  tokenizer = tiny_tokenizer()
  result = pipeline.tokenized_step_grained_dataset(tsv, tokenizer, cache_dir=tmp_path / "cache", **OPTIONS)
  direct = tokenize_rows(read_step_grained_tsv(tsv), tokenizer, **OPTIONS)
  assert len(result.dataset) == len(direct) == 10
  for row, example in zip(result.dataset, direct):
    for key in ("input_ids", "action_mask", "step_ids"):
      assert row[key].tolist() == example.features()[key].tolist()
    np.testing.assert_array_equal(row["step_rewards"], example.step_rewards)
  expected = {"rows": 10, "invalid_rows": 0}
  for key in ("context_tokens_dropped", "response_tokens_dropped", "steps_dropped"):
    expected[key] = sum(getattr(example, key) for example in direct)
    expected[f"rows_with_{key}"] = sum(getattr(example, key) > 0 for example in direct)
  assert result.counters == expected
  assert expected["steps_dropped"] > 0  # the limits above do cut steps away


def test_rerun_reads_the_cache(tsv, tmp_path, monkeypatch):
  tokenizer = tiny_tokenizer()
  first = pipeline.tokenized_step_grained_dataset(tsv, tokenizer, cache_dir=tmp_path / "cache", **OPTIONS)
  _forbid_tokenising(monkeypatch)
  again = pipeline.tokenized_step_grained_dataset(tsv, tokenizer, cache_dir=tmp_path / "cache", **OPTIONS)
  assert [r.tolist() for r in again.dataset["input_ids"]] == [r.tolist() for r in first.dataset["input_ids"]]
  assert again.counters == first.counters


@pytest.mark.parametrize("change", ["file", "options"])
def test_a_changed_input_is_tokenised_again(tsv, tmp_path, monkeypatch, change):
  tokenizer = tiny_tokenizer()
  pipeline.tokenized_step_grained_dataset(tsv, tokenizer, cache_dir=tmp_path / "cache", **OPTIONS)
  options = dict(OPTIONS)
  if change == "file":
    tsv.write_text(tsv.read_text(encoding="utf-8") + "['x']\t['y']\t[0.0]\n", encoding="utf-8")
  else:
    options["max_context_len"] += 1
  _forbid_tokenising(monkeypatch)
  with pytest.raises(AssertionError, match="tokenised again"):
    pipeline.tokenized_step_grained_dataset(tsv, tokenizer, cache_dir=tmp_path / "cache", **options)


def test_skipped_rows_are_reported_on_every_run(tsv, tmp_path, monkeypatch):
  tsv.write_text(tsv.read_text(encoding="utf-8") + "[]\t[]\t[]\n", encoding="utf-8")
  tokenizer = tiny_tokenizer()
  for _ in range(2):  # a failed build leaves nothing behind that a re-run could mistake for a cache
    with pytest.raises(pipeline.DataError, match=r":11: prompt: expected a non-empty list"):
      pipeline.tokenized_step_grained_dataset(tsv, tokenizer, cache_dir=tmp_path / "cache", **OPTIONS)
  for _ in range(2):
    result = pipeline.tokenized_step_grained_dataset(tsv, tokenizer, cache_dir=tmp_path / "cache",
                                                     skip_invalid=True, **OPTIONS)
    assert result.counters["rows"] == 10 and result.counters["invalid_rows"] == 1
    assert result.invalid == (f"{tsv}:11: prompt: expected a non-empty list (one entry per step), found []",)
    _forbid_tokenising(monkeypatch)


def test_batches_from_the_dataset(tsv, tmp_path):
  result = pipeline.tokenized_step_grained_dataset(tsv, tiny_tokenizer(), cache_dir=tmp_path / "cache", **OPTIONS)
  buckets = length_buckets(OPTIONS["max_context_len"] + OPTIONS["max_response_len"], min_len=128)
  collate = lambda examples: collate_step_grained(examples, pad_id=0, length_buckets=buckets, max_steps=4)
  batches = list(iterate_batches(result.dataset, collate, batch_size=4, seed=0))
  assert len(batches) == 2
  for batch in batches:
    assert batch["input_ids"].shape[1] in buckets and batch["step_rewards"].shape == (4, 4)
    assert (batch["action_mask"] <= batch["attention_mask"]).all()


def test_sft_dataset(reference_dir, tmp_path):
  tokenizer = tiny_tokenizer()
  path = reference_dir / "sft_conversations_G123.json"
  options = dict(max_context_len=2000, max_response_len=300, add_bos=False)
  result = pipeline.tokenized_sft_dataset(path, tokenizer, "llama3", cache_dir=tmp_path / "cache", **options)
  conversations = read_sft_conversations(path)
  assert result.counters["rows"] == len(conversations) == 38
  direct = tokenize_conversation(conversations[5], "llama3", tokenizer, **options)
  assert result.dataset[5]["input_ids"].tolist() == direct.input_ids.tolist()
  assert result.dataset[5]["loss_mask"].tolist() == direct.loss_mask.tolist()
  with pytest.raises(ValueError, match="template"):
    pipeline.tokenized_sft_dataset(path, tokenizer, "vicuna", cache_dir=tmp_path / "cache", **options)


def test_file_without_valid_rows_gives_an_empty_dataset(tmp_path):
  path = tmp_path / "bad.tsv"
  path.write_text("prompt\tresponse\treward\n[]\t[]\t[]\n", encoding="utf-8")
  result = pipeline.tokenized_step_grained_dataset(path, tiny_tokenizer(), cache_dir=tmp_path / "cache",
                                                   skip_invalid=True, **OPTIONS)
  assert len(result.dataset) == 0
  assert (result.counters["rows"], result.counters["invalid_rows"]) == (0, 1)


def test_the_dataset_cache_refuses_a_fifo_before_hashing_it(tmp_path):
  fifo = tmp_path / "pipe.tsv"
  os.mkfifo(fifo)
  for path in (fifo, "/dev/zero"):  # one would block, the other never end
    with pytest.raises(DataError, match="expected a regular file holding a data file"):
      pipeline.file_fingerprint(path)
