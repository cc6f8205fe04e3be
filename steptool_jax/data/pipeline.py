"""Files to tokenised `datasets.Dataset`s, cached on disk so a re-run does not re-tokenise.

The cache key is a hash of the file's bytes, the tokenizer (its full serialised
definition and special ids), the options and a format version; it is handed to
`Dataset.from_generator` as the fingerprint, so HF `datasets` stores the Arrow file under
`cache_dir` and the next call with the same key memory-maps it instead of running the
generator. Changing any of those inputs gives a new key, never a stale dataset.

Truncation counters are columns of the dataset (summed in `TokenizedDataset.counters`);
rows skipped with `skip_invalid` are recorded in a small JSON file beside the cache, so
a cached run reports them just like the first one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from typing import Any, Callable, Iterator

import datasets
import numpy as np

from steptool_jax.data.errors import DataError
from steptool_jax.data.files import atomic_write, open_regular_file
from steptool_jax.data.render import chat_format
from steptool_jax.data.sft import iter_sft_conversations
from steptool_jax.data.tokenize import tokenize_conversation, tokenize_rows
from steptool_jax.data.tsv import iter_step_grained_tsv

_CACHE_VERSION = 1
_CHUNK_ROWS = 256  # rows per batched tokenizer call
_COUNTERS = ("context_tokens_dropped", "response_tokens_dropped")

STEP_GRAINED_FEATURES = datasets.Features({
    "input_ids": datasets.List(datasets.Value("int32")),
    "action_mask": datasets.List(datasets.Value("int8")),
    "step_ids": datasets.List(datasets.Value("int32")),
    "step_rewards": datasets.List(datasets.Value("float32")),
    "num_steps": datasets.Value("int32"),
    "context_tokens_dropped": datasets.Value("int32"),
    "response_tokens_dropped": datasets.Value("int32"),
    "steps_dropped": datasets.Value("int32"),
})
SFT_FEATURES = datasets.Features({
    "input_ids": datasets.List(datasets.Value("int32")),
    "loss_mask": datasets.List(datasets.Value("int8")),
    "context_tokens_dropped": datasets.Value("int32"),
    "response_tokens_dropped": datasets.Value("int32"),
    "turns_dropped": datasets.Value("int32"),
})


@dataclasses.dataclass(frozen=True)
class TokenizedDataset:
  """A tokenised file: the dataset (numpy format), what truncation cost, what was skipped."""

  dataset: datasets.Dataset
  counters: dict[str, int]
  invalid: tuple[str, ...]  # formatted DataErrors of skipped rows


def tokenized_step_grained_dataset(path: str | os.PathLike[str], tokenizer: Any, *, cache_dir: str | os.PathLike[str],
                                   max_context_len: int, max_response_len: int, add_bos: bool = True,
                                   eos_after_actions: bool = False, skip_invalid: bool = False) -> TokenizedDataset:
  """A step-grained TSV, tokenised with `tokenize_rows` (see there for the options)."""
  options = dict(max_context_len=max_context_len, max_response_len=max_response_len, add_bos=add_bos,
                 eos_after_actions=eos_after_actions)

  def examples(rows: list[Any]) -> list[dict[str, Any]]:
    return [example.features() for example in tokenize_rows(rows, tokenizer, **options)]

  return _cached(path, tokenizer, kind="step_grained", options={**options, "skip_invalid": skip_invalid},
                 records=iter_step_grained_tsv, tokenize=examples, features=STEP_GRAINED_FEATURES,
                 cache_dir=cache_dir, skip_invalid=skip_invalid, dropped_key="steps_dropped")


def tokenized_sft_dataset(path: str | os.PathLike[str], tokenizer: Any, template: str, *,
                          cache_dir: str | os.PathLike[str], max_context_len: int, max_response_len: int,
                          add_bos: bool = True, eos_after_actions: bool = False,
                          skip_invalid: bool = False) -> TokenizedDataset:
  """SFT conversations rendered in `template` and tokenised with `tokenize_conversation`."""
  chat_format(template)  # fail on a bad template before reading anything
  options = dict(max_context_len=max_context_len, max_response_len=max_response_len, add_bos=add_bos,
                 eos_after_actions=eos_after_actions)

  def examples(conversations: list[Any]) -> list[dict[str, Any]]:
    return [tokenize_conversation(conversation, template, tokenizer, **options).features()
            for conversation in conversations]

  return _cached(path, tokenizer, kind="sft", options={**options, "template": template, "skip_invalid": skip_invalid},
                 records=iter_sft_conversations, tokenize=examples, features=SFT_FEATURES, cache_dir=cache_dir,
                 skip_invalid=skip_invalid, dropped_key="turns_dropped")


def tokenizer_fingerprint(tokenizer: Any) -> str:
  """A hash of everything about the tokenizer that changes token ids."""
  backend = getattr(tokenizer, "backend_tokenizer", None)
  if backend is not None:
    definition = backend.to_str()
  else:  # slow tokenizers: let datasets hash the whole object
    definition = datasets.fingerprint.Hasher.hash(tokenizer)
  special = [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, type(tokenizer).__name__]
  return hashlib.sha256((definition + json.dumps(special)).encode()).hexdigest()


def file_fingerprint(path: str | os.PathLike[str]) -> str:
  """sha256 of the file's bytes; a FIFO or a device is a DataError (hashing /dev/zero never ends)."""
  digest = hashlib.sha256()
  with open_regular_file(path, expected="a data file") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _cached(path: str | os.PathLike[str], tokenizer: Any, *, kind: str, options: dict[str, Any],
            records: Callable[[str], Iterator[Any]], tokenize: Callable[[list[Any]], list[dict[str, Any]]],
            features: datasets.Features, cache_dir: str | os.PathLike[str], skip_invalid: bool,
            dropped_key: str) -> TokenizedDataset:
  key = hashlib.sha256(json.dumps({
      "version": _CACHE_VERSION, "kind": kind, "file": file_fingerprint(path),
      "tokenizer": tokenizer_fingerprint(tokenizer), "options": options}, sort_keys=True).encode()).hexdigest()[:32]
  cache_dir = pathlib.Path(cache_dir)
  cache_dir.mkdir(parents=True, exist_ok=True)
  invalid_file = cache_dir / f"{kind}-{key}.invalid.json"

  produced, finished = 0, False

  def generate() -> Iterator[dict[str, Any]]:
    nonlocal produced, finished
    invalid: list[str] = []
    chunk: list[Any] = []
    for record in records(path):
      if isinstance(record, DataError):
        if not skip_invalid:
          raise record
        invalid.append(record.format())
        continue
      chunk.append(record)
      produced += 1
      if len(chunk) == _CHUNK_ROWS:
        yield from tokenize(chunk)
        chunk = []
    if chunk:
      yield from tokenize(chunk)
    with atomic_write(invalid_file, "w", encoding="utf-8") as f:  # a torn file would break every cache hit
      f.write(json.dumps(invalid, indent=1))
    finished = True

  try:
    dataset = datasets.Dataset.from_generator(generate, features=features, cache_dir=str(cache_dir),
                                              fingerprint=f"{kind}-{key}")
  except datasets.exceptions.DatasetGenerationError as e:
    # The wrapper hides the DataError (file, row, field) the user needs to see.
    if e.__cause__ is not None:
      raise e.__cause__ from None
    raise
  except ValueError:
    if produced or not finished:
      raise
    # A file with no (valid) rows: datasets refuses to build an empty split.
    dataset = datasets.Dataset.from_dict({name: [] for name in features}, features=features)
  invalid = tuple(json.loads(invalid_file.read_text(encoding="utf-8"))) if invalid_file.exists() else ()
  counters = {"rows": len(dataset), "invalid_rows": len(invalid)}
  for column in _COUNTERS + (dropped_key,):
    values = np.asarray(dataset[column], dtype=np.int64)
    counters[column] = int(values.sum())
    counters[f"rows_with_{column}"] = int((values > 0).sum())
  return TokenizedDataset(dataset=dataset.with_format("numpy"), counters=counters, invalid=invalid)
