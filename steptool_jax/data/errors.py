"""The one error type for bad input files.

Every reader raises `DataError` with the file, the row and the field at fault, so a user
sees `path:row: field: what was expected, what was found` instead of a traceback.
"""

from __future__ import annotations

import os
from typing import Any


class DataError(ValueError):
  """A record in an input file does not have the expected shape.

  Attributes:
    path: the file being read.
    row: where in the file: a 1-based data-row number for TSV files (the header
      row is not counted), the top-level key (query id) for JSON files, or
      None when the problem is with the file as a whole.
    field: the column or dotted JSON path at fault (e.g. `reward`,
      `answer.answer_details[0].next[0].message.name`).
    message: what was expected and what was found.
  """

  def __init__(self, path: str | os.PathLike[str], row: Any, field: str, message: str):
    self.path = os.fspath(path)
    self.row = row
    self.field = field
    self.message = message
    super().__init__(self.format())

  def format(self) -> str:
    where = self.path if self.row is None else f"{self.path}:{self.row}"
    return f"{where}: {self.field}: {self.message}"


def describe(value: Any, limit: int = 60) -> str:
  """A short, printable description of a found value for error messages."""
  text = repr(value)
  if len(text) > limit:
    text = text[: limit - 3] + "..."
  return f"{type(value).__name__} {text}"
