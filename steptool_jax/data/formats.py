"""The four original file formats by name, and telling them apart."""

from __future__ import annotations

import os
import pathlib
from typing import Any, Callable, Iterator

from steptool_jax.data.annotations import iter_reward_annotations
from steptool_jax.data.errors import DataError
from steptool_jax.data.files import load_json_records, read_utf8_text
from steptool_jax.data.sft import iter_sft_conversations
from steptool_jax.data.toolbench import iter_converted_answers
from steptool_jax.data.tsv import iter_step_grained_tsv

READERS: dict[str, Callable[[str | os.PathLike[str]], Iterator[Any]]] = {
    "tsv": iter_step_grained_tsv,
    "converted_answers": iter_converted_answers,
    "annotations": iter_reward_annotations,
    "sft": iter_sft_conversations,
}
FORMATS = tuple(READERS)

# A key only that format's records have, checked on the first record.
_JSON_MARKERS = (("process_reward", "annotations"), ("answer_steps", "annotations"),
                 ("instances", "sft"), ("answer", "converted_answers"), ("available_tools", "converted_answers"))


def detect_format(path: str | os.PathLike[str]) -> str:
  """`tsv` for a `.tsv` file or a file whose header names the TSV columns, else the JSON
  format whose keys the first record has.

  Raises:
    DataError: when the file fits none of the formats.
  """
  if pathlib.Path(path).suffix.lower() == ".tsv":
    return "tsv"
  text = read_utf8_text(path, expected="a StepTool data file")
  if not text.lstrip().startswith("{"):
    first_line = text.split("\n", 1)[0]
    if "prompt" in first_line and "response" in first_line:
      return "tsv"
    raise DataError(path, None, "file", "expected a step-grained TSV or a JSON object, found neither"
                    " (pass --format)")
  data, _ = load_json_records(path, expected="a StepTool JSON data file")  # repeated keys: the reader's to report
  first = next(iter(data.values()), None)
  if isinstance(first, dict):
    for key, fmt in _JSON_MARKERS:
      if key in first:
        return fmt
  raise DataError(path, None, "file", f"expected records of one of {', '.join(FORMATS[1:])}, found a first"
                  f" record with keys {sorted(first) if isinstance(first, dict) else type(first).__name__}"
                  " (pass --format)")
