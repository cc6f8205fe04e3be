"""The step-grained TSV of the original project: columns `prompt`, `response`, `reward`.

Each cell holds a Python-literal list with one entry per step (`prompt[i]` is the
context shown before action `response[i]`, `reward[i]` that step's shaped reward).
The file is tab-separated with csv quoting (cells containing quotes are wrapped in
double quotes, inner quotes doubled), exactly what Python's `csv` module writes,
so the writer below reproduces the published files byte for byte.

Cells are parsed by `literals.parse_literal`, in time and memory linear in the cell (a
flat list of strings and numbers is scanned token by token; another Python spelling goes
to `ast.literal_eval`, and failing that `json.loads`, which accepts the `NaN`/`Infinity`
spellings so they can be rejected with a clear message, up to `MAX_LITERAL_EVAL_CHARS`).
A cell is at most `MAX_CELL_CHARS` characters; nothing is ever evaluated as code.
"""

from __future__ import annotations

import csv
import math
import os
import re
from typing import Any, Iterable, Iterator, Sequence

from steptool_jax.data.errors import DataError, describe, short_repr
from steptool_jax.data.files import atomic_write, keep_valid, read_utf8_text
from steptool_jax.data.literals import MAX_LITERAL_CHARS, LiteralError, parse_literal
from steptool_jax.data.records import StepGrainedRow

COLUMNS = ("prompt", "response", "reward")
_EXPECTED_FILE = "a step-grained TSV with the header prompt<TAB>response<TAB>reward"
# Longest cell read: cells of long trajectories exceed csv's default 128 KiB field limit, and
# no cell is longer than the longest literal read.
MAX_CELL_CHARS = MAX_LITERAL_CHARS

csv.field_size_limit(max(csv.field_size_limit(), MAX_CELL_CHARS))


def iter_step_grained_tsv(path: str | os.PathLike[str]) -> Iterator[StepGrainedRow | DataError]:
  """Each data row parsed, or the `DataError` saying why it is bad (row numbers are
  1-based data rows; the header is not counted).

  Raises:
    DataError: for problems with the file itself (encoding, empty, header, csv syntax).
  """
  text = read_utf8_text(path, expected=_EXPECTED_FILE)
  reader = csv.reader(_lines(text), delimiter="\t")
  try:
    header = next(reader)
  except csv.Error as e:
    raise DataError(path, None, "header", f"expected {_EXPECTED_FILE}, found csv error: {_csv_problem(e)}") from None
  columns = _column_positions(path, header)
  row_number = 0
  while True:
    try:
      cells = next(reader)
    except StopIteration:
      return
    except csv.Error as e:
      # The csv reader cannot resynchronise after a syntax error, so this ends the file.
      raise DataError(path, row_number + 1, "row", _csv_problem(e)) from None
    if not cells:  # blank line
      continue
    row_number += 1
    too_long = next((len(cell) for cell in cells if len(cell) > MAX_CELL_CHARS), None)
    if too_long is not None:  # only when csv's global limit was raised by someone else
      yield DataError(path, row_number, "row", f"expected cells of at most {MAX_CELL_CHARS:,} characters,"
                      f" found one of {too_long:,}")
      continue
    if len(cells) != len(header):
      yield DataError(path, row_number, "row",
                      f"expected {len(header)} tab-separated cells like the header, found {len(cells)}")
      continue
    try:
      yield parse_row(path, row_number, {name: cells[i] for name, i in columns.items()})
    except DataError as e:
      yield e


def read_step_grained_tsv(path: str | os.PathLike[str], *, skip_invalid: bool = False,
                          errors: list[DataError] | None = None) -> list[StepGrainedRow]:
  """Reads every row; raises DataError on the first bad row unless `skip_invalid`
  (then bad rows are appended to `errors` when it is given)."""
  return keep_valid(iter_step_grained_tsv(path), skip_invalid=skip_invalid, errors=errors)


def write_step_grained_tsv(path: str | os.PathLike[str], rows: Iterable[StepGrainedRow]) -> int:
  """Writes rows in the original format (readable by `read_step_grained_tsv`); returns the count.

  The file is replaced atomically: on any error (a bad row, an exception from `rows`) the
  old file, if any, is left as it was.

  Raises:
    ValueError: for a row the reader would reject (so bad data never reaches disk).
  """
  count = 0
  with atomic_write(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f, delimiter="\t", lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
      problem = check_steps(row.prompts, row.responses, row.rewards)
      if problem is not None:
        field, message = problem
        raise ValueError(f"row {count + 1}: {field}: {message}")
      writer.writerow(format_row(row))
      count += 1
  return count


def format_row(row: StepGrainedRow) -> tuple[str, str, str]:
  """The three cells of a row: Python-literal lists, as in the original files."""
  return repr(list(row.prompts)), repr(list(row.responses)), repr([float(r) for r in row.rewards])


def parse_row(path: str | os.PathLike[str], row: int, cells: dict[str, str]) -> StepGrainedRow:
  """One row from its `prompt`, `response` and `reward` cells."""
  prompts = _parse_list(path, row, "prompt", cells["prompt"])
  responses = _parse_list(path, row, "response", cells["response"])
  rewards = _parse_list(path, row, "reward", cells["reward"])
  for field, values in (("prompt", prompts), ("response", responses)):
    for i, value in enumerate(values):
      if not isinstance(value, str):
        raise DataError(path, row, f"{field}[{i}]", f"expected a string, found {describe(value)}")
  numbers = []
  for i, value in enumerate(rewards):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise DataError(path, row, f"reward[{i}]", f"expected a number, found {describe(value)}")
    try:
      numbers.append(float(value))
    except OverflowError:
      raise DataError(path, row, f"reward[{i}]", "expected a finite number, found an integer too large for"
                      f" a float ({value.bit_length():,} bits)") from None
  problem = check_steps(prompts, responses, numbers)
  if problem is not None:
    raise DataError(path, row, *problem)
  return StepGrainedRow(tuple(prompts), tuple(responses), tuple(numbers))


def check_steps(prompts: Sequence[str], responses: Sequence[str], rewards: Sequence[float]
                ) -> tuple[str, str] | None:
  """(field, message) for the first rule a row breaks, or None when it is well formed."""
  lengths = {"prompt": len(prompts), "response": len(responses), "reward": len(rewards)}
  for field, length in lengths.items():
    if length == 0:
      return field, "expected a non-empty list (one entry per step), found []"
  if len(set(lengths.values())) > 1:
    if lengths["prompt"] == lengths["response"]:
      odd = "reward"
    elif lengths["response"] == lengths["reward"]:
      odd = "prompt"
    else:
      odd = "response"
    return odd, ("expected prompt, response and reward lists of equal length (one entry per step),"
                 f" found {lengths['prompt']}, {lengths['response']}, {lengths['reward']}")
  for i, response in enumerate(responses):
    if not response.strip():
      return f"response[{i}]", f"expected a non-empty action, found {describe(response)}"
  for i, reward in enumerate(rewards):
    if not math.isfinite(reward):
      return f"reward[{i}]", f"expected a finite number, found {reward!r}"
  return None


def _column_positions(path: str | os.PathLike[str], header: list[str]) -> dict[str, int]:
  names = [name.strip() for name in header]
  if len(names) == 1 and any(sep in names[0] for sep in (",", ";", "|")):
    raise DataError(path, None, "header",
                    f"expected tab-separated columns {', '.join(COLUMNS)}, found a single column"
                    f" {describe(header[0])} (is the delimiter a tab?)")
  positions = {}
  for column in COLUMNS:
    if names.count(column) > 1:
      raise DataError(path, None, column, f"expected one column named {column!r} in the header,"
                      f" found {names.count(column)}")
    if column not in names:
      raise DataError(path, None, column,
                      f"expected a column named {column!r} in the header, found columns {short_repr(names, 200)}")
    positions[column] = names.index(column)
  return positions


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)?")


def _lines(text: str) -> Iterator[str]:
  """The lines of `text` with their endings, as `io.StringIO(text, newline="")` gives them,
  one at a time (a StringIO holds a 4-byte-per-character copy of the whole file)."""
  pos, end = 0, len(text)
  while pos < end:
    line = _LINE.match(text, pos)
    pos = line.end()
    yield line.group()


def _csv_problem(error: csv.Error) -> str:
  if "field larger than field limit" in str(error):
    return f"expected cells of at most {MAX_CELL_CHARS:,} characters, found a longer one (the rest is not read)"
  return f"expected csv-quoted tab-separated cells, found: {error}"


def _parse_list(path: str | os.PathLike[str], row: int, field: str, cell: str) -> list[Any]:
  try:
    value = parse_literal(cell)
  except LiteralError as e:
    raise DataError(path, row, field, f"expected a Python-literal list, {e}") from None
  if not isinstance(value, list):
    raise DataError(path, row, field, f"expected a Python-literal list, found {describe(value)}")
  return value
