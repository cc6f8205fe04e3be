"""The one error type for bad input files.

Every reader raises `DataError` with the file, the row and the field at fault, so a user
sees `path:row: field: what was expected, what was found` instead of a traceback.
"""

from __future__ import annotations

import builtins
import os
import reprlib
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


class _BoundedRepr(reprlib.Repr):
  """`repr` that looks at no more of a value than a message of `limit` characters shows.

  A plain `repr` of a found value costs as much as the value (a 50 MB string, a million-element
  list) and recurses on its depth (a list nested 10,000 levels raises RecursionError), so a
  reader's error message could itself crash. Dicts keep their insertion order (reprlib sorts).
  """

  def __init__(self, limit: int):
    super().__init__()
    self.maxlevel = limit // 2
    self.maxstring = self.maxother = self.maxlong = limit + 1
    self.maxlist = self.maxtuple = self.maxdict = self.maxset = self.maxfrozenset = self.maxdeque = limit // 2 + 1

  def repr_str(self, x: str, level: int) -> str:
    return builtins.repr(x[:self.maxstring])  # a prefix: the caller cuts the text to `limit`

  def repr_int(self, x: int, level: int) -> str:
    if x.bit_length() > 4 * self.maxlong:  # more digits than shown (and maybe than repr allows)
      return f"<integer of {x.bit_length()} bits>"
    return builtins.repr(x)

  def repr_dict(self, x: dict, level: int) -> str:
    if not x:
      return "{}"
    if level <= 0:
      return "{...}"
    items = []
    for i, (key, value) in enumerate(x.items()):
      if i == self.maxdict:
        items.append("...")
        break
      items.append(f"{self.repr1(key, level - 1)}: {self.repr1(value, level - 1)}")
    return "{" + ", ".join(items) + "}"


def short_repr(value: Any, limit: int = 60) -> str:
  """`repr(value)`, cut to `limit` characters (bounded in time and memory by `limit`,
  whatever the value's size or depth)."""
  text = _BoundedRepr(limit).repr(value)
  if len(text) > limit:
    text = text[: limit - 3] + "..."
  return text


def describe(value: Any, limit: int = 60) -> str:
  """A short, printable description of a found value for error messages: its type and `short_repr`."""
  return f"{type(value).__name__} {short_repr(value, limit)}"
