"""Rows/s for reading and tokenising the step-grained TSV.

    python benchmarks/data_tsv_throughput.py [--replicas=1000] [--max_context_len=1024] [--max_response_len=256]

Writes the reference rows replicated `--replicas` times to a temporary TSV, then times:
reading alone, reading + tokenising in memory (`tokenize_rows`), the first cached-dataset
build (`tokenized_step_grained_dataset`: read + tokenise + Arrow write) and the re-run
that hits the cache. Tokenizer: the tiny byte-level BPE of tests/tiny_tokenizer.py
(vocabulary 400, so roughly 1.5 characters per token).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import datasets  # noqa: E402

from steptool_jax.data.pipeline import tokenized_step_grained_dataset  # noqa: E402
from steptool_jax.data.tokenize import tokenize_rows  # noqa: E402
from steptool_jax.data.tsv import read_step_grained_tsv, write_step_grained_tsv  # noqa: E402
from tests.tiny_tokenizer import tiny_tokenizer  # noqa: E402

REFERENCE = REPO.parent / "shared" / "reference-data" / "original-format" / "toolllama_step_grained_for_ppo.tsv"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--replicas", type=int, default=1000)
  parser.add_argument("--max_context_len", type=int, default=1024)
  parser.add_argument("--max_response_len", type=int, default=256)
  args = parser.parse_args()
  datasets.disable_progress_bars()
  tokenizer = tiny_tokenizer()
  options = dict(max_context_len=args.max_context_len, max_response_len=args.max_response_len)
  with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / "rows.tsv"
    write_step_grained_tsv(path, read_step_grained_tsv(REFERENCE) * args.replicas)
    size_mb = path.stat().st_size / 1e6

    start = time.perf_counter()
    rows = read_step_grained_tsv(path)
    read_s = time.perf_counter() - start

    start = time.perf_counter()
    examples = tokenize_rows(read_step_grained_tsv(path), tokenizer, **options)
    read_tokenize_s = time.perf_counter() - start
    tokens = sum(len(example.input_ids) for example in examples)

    texts = [text for row in rows for pair in zip(row.prompts, row.responses) for text in pair]
    start = time.perf_counter()
    tokenizer(texts, add_special_tokens=False)
    tokenizer_s = time.perf_counter() - start

    start = time.perf_counter()
    tokenized_step_grained_dataset(path, tokenizer, cache_dir=pathlib.Path(tmp) / "cache", **options)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    tokenized_step_grained_dataset(path, tokenizer, cache_dir=pathlib.Path(tmp) / "cache", **options)
    cached_s = time.perf_counter() - start

  n = len(rows)
  print(f"file: {n} rows, {size_mb:.1f} MB; tokenizer: tiny byte-level BPE (vocab {len(tokenizer)});"
        f" {args.max_context_len}+{args.max_response_len} tokens, {tokens / n:.0f} kept per row")
  print(f"read only:                 {n / read_s:10.0f} rows/s ({read_s:.2f} s)")
  print(f"read + tokenise:           {n / read_tokenize_s:10.0f} rows/s ({read_tokenize_s:.2f} s)")
  print(f"  of which the tokenizer:  {n / tokenizer_s:10.0f} rows/s ({tokenizer_s:.2f} s,"
        f" {size_mb / tokenizer_s:.1f} MB/s)")
  print(f"cached dataset, first run: {n / build_s:10.0f} rows/s ({build_s:.2f} s)")
  print(f"cached dataset, re-run:    {n / cached_s:10.0f} rows/s ({cached_s:.2f} s)")


if __name__ == "__main__":
  main()
