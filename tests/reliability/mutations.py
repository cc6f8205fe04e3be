"""Structural and byte-level mutations of data files, drawn by hypothesis.

A JSON file is parsed into a tree whose objects are `Pairs` (lists of key/value pairs, so a
key can be repeated) and written back by `dump`; `Raw` nodes are written verbatim (deep
nesting, integers Python cannot convert, ...). A TSV is a list of rows of cells. Each
mutation is one edit an adversarial user or a broken producer could make.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from hypothesis import strategies as st


class Pairs(list):
  """A JSON object as its (key, value) pairs."""


class Raw(str):
  """JSON text written as it is."""


def parse(text: str) -> Any:
  return json.loads(text, object_pairs_hook=Pairs)


def dump(value: Any) -> str:
  if isinstance(value, Raw):
    return str(value)
  if isinstance(value, Pairs):
    return "{" + ", ".join(f"{json.dumps(key)}: {dump(item)}" for key, item in value) + "}"
  if isinstance(value, list):
    return "[" + ", ".join(dump(item) for item in value) + "]"
  return json.dumps(value)


def first_records(text: str, count: int) -> Any:
  """The tree of the first `count` records of a JSON file keyed by query id."""
  return Pairs(parse(text)[:count])


# Values and texts the readers must take apart without crashing: wrong types, bools where
# numbers go, the literal spellings of the formats, and the edge cases of the issue.
STRINGS = st.sampled_from([
    "", " ", "Step 1: {'name': 't', 'arguments': '{}', 'response': 'r'}", "Step 0: {}", "Step 01: {'name': 't'}",
    "Step " + "9" * 5000 + ": {'name': 't'}", "Final step: {'name': 'Finish', 'arguments': '{}'}", "Final step: [",
    "{'name': 'a', 'name': 'b'}", "AnswerStatus.Solved", "Unsure", "Maybe", "Finish", "give_answer", "assistant",
    "function", "tool", "system", "user", "robot", "[" * 300 + "]" * 300, "{'name': " + "[" * 500 + "}",
    "Step 1: {'name': 't', 'arguments': " + "[0, " * 20_000 + "]}", "\x00", "\ud7ff\uffff", "NaN", "1e999",
]) | st.text(max_size=12)
SCALARS = st.none() | st.booleans() | st.integers(-3, 7) | st.floats() | STRINGS
RAW = st.sampled_from([Raw("[" * 10_000 + "]" * 10_000), Raw('{"a": ' * 3000 + "1" + "}" * 3000), Raw("9" * 5000),
                       Raw("-0"), Raw("1e999"), Raw("NaN"), Raw("-Infinity"), Raw('"' + "x" * 100_000 + '"'),
                       Raw("[" + ", ".join(["true"] * 3) + "]"), Raw("[" + "1, " * 20_000 + "1]")])
VALUES = st.recursive(SCALARS | RAW, lambda children: st.lists(children, max_size=3)
                      | st.lists(st.tuples(STRINGS, children), max_size=3).map(Pairs), max_leaves=6)
KEYS = st.sampled_from(["0", "00", "1", "-1", " 1", "1.0", "", "query", "answer", "next", "role", "message", "name",
                        "arguments", "response", "process_reward", "is_solved", "succeed_tool_calling",
                        "contributions", "answer_steps", "final_step", "instances", "conversations", "from", "value",
                        "id", "available_tools", "function", "parameters", "answer_details", "tool_names"]
                       ) | st.text(max_size=5)


def _positions(tree: Any) -> list[tuple[Any, int]]:
  """Every (container, index) of the tree: list items and object entries."""
  positions, stack = [], [tree]
  while stack:
    node = stack.pop()
    if isinstance(node, (list, Pairs)) and not isinstance(node, Raw):
      for i, item in enumerate(node):
        positions.append((node, i))
        stack.append(item[1] if isinstance(node, Pairs) else item)
  return positions


def mutate_json(draw: Any, tree: Any) -> None:
  """One structural edit of the tree, in place."""
  positions = _positions(tree)
  if not positions:
    return
  container, i = draw(st.sampled_from(positions))
  operation = draw(st.sampled_from(["replace", "delete", "duplicate", "rename", "wrap", "as_list"]))
  if isinstance(container, Pairs):
    key, value = container[i]
    if operation == "replace":
      container[i] = (key, draw(VALUES))
    elif operation == "delete":
      del container[i]
    elif operation == "duplicate":  # the same key again, with the same or another value
      container.insert(draw(st.integers(0, len(container))), (key, draw(st.just(value) | VALUES)))
    elif operation == "rename":
      container[i] = (draw(KEYS), value)
    elif operation == "wrap":
      container[i] = (key, [value])
    elif isinstance(value, Pairs):
      container[i] = (key, [item for _, item in value])
  else:
    if operation in ("replace", "rename"):
      container[i] = draw(VALUES)
    elif operation == "delete":
      del container[i]
    elif operation == "duplicate":
      container.insert(i, container[i])
    elif operation == "wrap":
      container[i] = [container[i]]
    elif isinstance(container[i], Pairs):
      container[i] = [item for _, item in container[i]]


# TSV cells: the literal lists of the format, wrong ones, and ones long enough for the scanner.
CELLS = st.one_of(
    st.lists(st.text(max_size=8) | st.floats() | st.integers() | st.booleans() | st.none(), max_size=4).map(repr),
    st.sampled_from(["[", "[]", "['a',]", "[0.5]", "[NaN]", "[1e999]", "[True]", "[" + "9" * 5000 + "]",
                     "['a' 'b']", "[u'x']", "['\\x4']", "['\\N{BULLET}']", "[[1]]", "{'a': 1}", "[1_0]",
                     "[" * 1000 + "]" * 1000, "[" + "0.5, " * 20_000 + "0.5]", "['" + "x" * 70_000 + "']",
                     "[" + "1_0, " * 20_000 + "]", "__import__('os').system('true')", '"', '""""', "\r", "\x00"]),
    st.text(max_size=10))


def parse_tsv(text: str) -> list[list[str]]:
  return list(csv.reader(io.StringIO(text, newline=""), delimiter="\t"))


def dump_tsv(rows: list[list[str]]) -> str:
  out = io.StringIO(newline="")
  csv.writer(out, delimiter="\t", lineterminator="\n").writerows(rows)
  return out.getvalue()


def mutate_tsv(draw: Any, rows: list[list[str]]) -> None:
  """One structural edit of the rows (the header is row 0), in place."""
  if not rows:
    rows.append(["prompt", "response", "reward"])
  r = draw(st.integers(0, len(rows) - 1))
  row = rows[r]
  operation = draw(st.sampled_from(["cell", "cell", "cell", "drop_cell", "add_cell", "duplicate_row", "drop_row",
                                    "header"]))
  if operation == "cell" and row:
    row[draw(st.integers(0, len(row) - 1))] = draw(CELLS)
  elif operation == "drop_cell" and row:
    del row[draw(st.integers(0, len(row) - 1))]
  elif operation == "add_cell":
    row.insert(draw(st.integers(0, len(row))), draw(CELLS))
  elif operation == "duplicate_row":
    rows.insert(r, list(row))
  elif operation == "drop_row":
    del rows[r]
  elif operation == "header":
    rows[0] = draw(st.lists(st.sampled_from(["prompt", "response", "reward", " prompt", "Reward", "x", ""]),
                            max_size=4))


def mutate_bytes(draw: Any, data: bytes) -> bytes:
  """One byte-level edit: truncate, insert, delete or overwrite a span."""
  if not data:
    return draw(st.binary(max_size=20))
  start = draw(st.integers(0, len(data)))
  operation = draw(st.sampled_from(["truncate", "insert", "delete", "overwrite"]))
  if operation == "truncate":
    return data[:start]
  stop = min(len(data), start + draw(st.integers(0, 40)))
  junk = draw(st.binary(max_size=8) | st.sampled_from([b"\xff", b"\xef\xbb\xbf", b"\x00", b'"', b"\t", b"\r\n",
                                                       b"\\", b"{", b"[", b"]", b"}", b","]))
  if operation == "insert":
    return data[:start] + junk + data[start:]
  if operation == "delete":
    return data[:start] + data[stop:]
  return data[:start] + junk + data[stop:]
