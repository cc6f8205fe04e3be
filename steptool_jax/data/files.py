"""Opening input files safely, and the skip-or-raise policy every reader shares.

A reader parses records one by one and yields either the record or the `DataError`
that explains why that record is bad; `keep_valid` then decides whether the first
error stops the read or the bad records are counted and skipped. Problems with the
file as a whole (missing, not UTF-8, empty, not JSON) always raise: there is nothing
left to count.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, TypeVar

from steptool_jax.data.errors import DataError, describe

T = TypeVar("T")


def read_utf8_text(path: str | os.PathLike[str], *, expected: str) -> str:
  """The whole file as text; `expected` says what the file should hold (for errors).

  Raises:
    DataError: the file is missing, not UTF-8 or empty.
  """
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise DataError(path, None, "file", f"expected a readable {expected}, found {e.strerror}") from None
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data[: e.start].count(b"\n") + 1
    raise DataError(
        path, None, "file",
        f"expected UTF-8 text, found byte 0x{data[e.start]:02x} at line {line}, offset {e.start}"
    ) from None
  if text.startswith("\ufeff"):  # a BOM written by some editors is not content
    text = text[1:]
  if not text.strip():
    raise DataError(path, None, "file", f"expected {expected}, found an empty file")
  return text


def load_json_object(path: str | os.PathLike[str], *, expected: str) -> dict[str, Any]:
  """A UTF-8 JSON file whose top level is an object (query id -> record)."""
  text = read_utf8_text(path, expected=expected)
  try:
    value = json.loads(text)
  except json.JSONDecodeError as e:
    raise DataError(path, None, "file", f"expected {expected}, found invalid JSON at line {e.lineno},"
                    f" column {e.colno}: {e.msg}") from None
  if not isinstance(value, dict):
    raise DataError(path, None, "file", f"expected {expected} (a JSON object keyed by query id),"
                    f" found {describe(value)}")
  return value


def keep_valid(results: Iterable[T | DataError], *, skip_invalid: bool = False,
               errors: list[DataError] | None = None) -> list[T]:
  """The good records; the first bad one raises unless `skip_invalid`.

  With `skip_invalid`, bad records are appended to `errors` (when given) so the
  caller can count and report them: nothing is dropped silently.
  """
  kept = []
  for result in results:
    if isinstance(result, DataError):
      if not skip_invalid:
        raise result
      if errors is not None:
        errors.append(result)
    else:
      kept.append(result)
  return kept
