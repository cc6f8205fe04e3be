"""JSON that any depth can pass through, and that never drops a duplicate key in silence.

The stdlib `json` module recurses once per nesting level, in both directions: `json.loads`
raises RecursionError near 1,000 levels, the indenting encoder behind `json.dump` likewise.
A ToolBench converted answer nests two levels per node of its answer chain (`next: [node]`),
so an answer of a few hundred steps could be neither written nor read. And `json.loads`
keeps the last value of a repeated key without a word, so a file with a query id twice
loses a record.

`loads_checked` parses with the C decoder first (fast, and every real file fits its
recursion limit); only when that runs out of stack does it parse again with the loop below,
which keeps its own stack, accepts exactly the same text (it calls the C scanner for every
string, number and constant) and stops at `MAX_JSON_DEPTH`. Either way every object goes
through one hook that records repeated keys. `iter_encode` writes what `json.dumps` writes,
byte for byte, without recursing.
"""

from __future__ import annotations

import dataclasses
import json
import json.decoder
import json.encoder
import re
import sys
from typing import Any, Iterator

# Deep enough for a converted answer of about 25,000 steps with thoughts (4 levels a step),
# shallow enough that the explicit stack stays small (a list entry per level).
MAX_JSON_DEPTH = 100_000

_WHITESPACE = re.compile(r"[ \t\n\r]*")


class JSONDepthError(ValueError):
  """The text nests deeper than the allowed depth."""

  def __init__(self, max_depth: int, text: str, pos: int):
    self.lineno = text.count("\n", 0, pos) + 1
    self.colno = pos - text.rfind("\n", 0, pos)
    super().__init__(f"nesting deeper than {max_depth:,} levels at line {self.lineno}, column {self.colno}")


@dataclasses.dataclass(frozen=True)
class DuplicateKey:
  """A key that appears more than once in one JSON object (`obj` holds its last value)."""

  obj: dict[str, Any]
  key: str
  count: int


class _PairsHook:
  """`object_pairs_hook` that builds the dict and notes every repeated key."""

  def __init__(self):
    self.duplicates: list[DuplicateKey] = []

  def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
      counts: dict[str, int] = {}
      for key, _ in pairs:
        counts[key] = counts.get(key, 0) + 1
      self.duplicates.extend(DuplicateKey(obj, key, count) for key, count in counts.items() if count > 1)
    return obj


def loads_checked(text: str, *, max_depth: int = MAX_JSON_DEPTH) -> tuple[Any, list[DuplicateKey]]:
  """The JSON value of `text` and the keys repeated within one object (in closing order).

  Raises:
    json.JSONDecodeError: the text is not JSON.
    JSONDepthError: it nests deeper than `max_depth`.
    ValueError: an integer has more digits than Python converts (`sys.get_int_max_str_digits`).
  """
  hook = _PairsHook()
  try:
    return json.loads(text, object_pairs_hook=hook), hook.duplicates
  except RecursionError:
    pass
  hook = _PairsHook()
  return _loads_iteratively(text, hook, max_depth), hook.duplicates


def _loads_iteratively(text: str, pairs_hook: _PairsHook, max_depth: int) -> Any:
  """`json.loads(text, object_pairs_hook=pairs_hook)` with an explicit stack instead of recursion."""
  scan_scalar = json.JSONDecoder().scan_once  # containers are handled here, so it never recurses
  scan_key = json.decoder.scanstring
  skip = _WHITESPACE.match
  keys: dict[str, str] = {}  # one string object per distinct key, as the C decoder does
  # Each open container: [items, is_object, key of the value being parsed].
  stack: list[list[Any]] = []

  def object_key(pos: int) -> tuple[str, int]:
    """The key at `pos` and the position of its value."""
    if text[pos:pos + 1] != '"':
      raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, pos)
    key, pos = scan_key(text, pos + 1, True)
    key = keys.setdefault(key, key)
    pos = skip(text, pos).end()
    if text[pos:pos + 1] != ":":
      raise json.JSONDecodeError("Expecting ':' delimiter", text, pos)
    return key, skip(text, pos + 1).end()

  pos = skip(text, 0).end()
  while True:
    # A value starts at `pos`: open a container, or scan a scalar.
    char = text[pos:pos + 1]
    if char in ("{", "["):
      if len(stack) >= max_depth:
        raise JSONDepthError(max_depth, text, pos)
      pos = skip(text, pos + 1).end()
      if char == "{" and text[pos:pos + 1] == "}":
        value, pos = pairs_hook([]), pos + 1
      elif char == "[" and text[pos:pos + 1] == "]":
        value, pos = [], pos + 1
      elif char == "{":
        key, pos = object_key(pos)
        stack.append([[], True, key])
        continue
      else:
        stack.append([[], False, None])
        continue
    else:
      try:
        value, pos = scan_scalar(text, pos)
      except StopIteration as e:
        raise json.JSONDecodeError("Expecting value", text, e.value) from None
    # A value ended at `pos`: add it to its container, closing every container that ends here.
    while True:
      if not stack:
        end = skip(text, pos).end()
        if end != len(text):
          raise json.JSONDecodeError("Extra data", text, end)
        return value
      frame = stack[-1]
      items, is_object = frame[0], frame[1]
      items.append((frame[2], value) if is_object else value)
      pos = skip(text, pos).end()
      char = text[pos:pos + 1]
      if char == ",":
        pos = skip(text, pos + 1).end()
        if is_object:
          frame[2], pos = object_key(pos)
        break
      if char != ("}" if is_object else "]"):
        raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)
      pos += 1
      stack.pop()
      value = pairs_hook(items) if is_object else items


def iter_encode(value: Any, *, indent: int | str | None = None, ensure_ascii: bool = True,
                indent_depth: int | None = None) -> Iterator[str]:
  """The chunks of `json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)`, without
  recursion. Keys may be str, int, float, bool or None (as in `json`); values dicts, lists,
  tuples, strings, numbers, bools and None.

  `indent_depth` (with `indent`): containers nested deeper are written on one line (with
  the same `,` and `: ` separators). Indenting costs the depth in spaces on every line, so a
  long converted-answer chain would grow with the square of its length; up to that depth
  the text is exactly `json.dumps`'s.

  Raises:
    TypeError: a value or key of another type.
    ValueError: a container that contains itself.
  """
  if indent is not None and not isinstance(indent, str):
    indent = " " * indent
  item_separator = ", " if indent is None else ","
  indent_depth = -1 if indent is None else (sys.maxsize if indent_depth is None else indent_depth)

  def newline(depth: int, inside: int) -> str:
    """The line break before an item (or closing bracket) at `depth`, in a container at `inside`."""
    return "\n" + indent * depth if inside <= indent_depth else ""
  encode_string = json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring

  def scalar(item: Any) -> str | None:
    """The text of a non-container value, or None for a container."""
    if isinstance(item, str):
      return encode_string(item)
    if item is None:
      return "null"
    if item is True:
      return "true"
    if item is False:
      return "false"
    if isinstance(item, int):
      return int.__repr__(item)
    if isinstance(item, float):
      return _float_text(item)
    if isinstance(item, (dict, list, tuple)):
      return None
    raise TypeError(f"Object of type {type(item).__name__} is not JSON serializable")

  def key_text(key: Any) -> str:
    if isinstance(key, str):
      return encode_string(key)
    if isinstance(key, (int, float)) or key is None:  # bools included: json writes "true"
      return encode_string(scalar(key) if not isinstance(key, float) else _float_text(key))
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")

  # Each open container: (iterator over its items, is a dict, its id for the cycle check).
  stack: list[tuple[Iterator[Any], bool, int]] = []
  open_ids: set[int] = set()
  item = value
  while True:
    text = scalar(item)
    if text is not None:
      yield text
    elif not item:
      yield "{}" if isinstance(item, dict) else "[]"
    else:
      if id(item) in open_ids:
        raise ValueError("Circular reference detected")
      is_dict = isinstance(item, dict)
      stack.append((iter(item.items()) if is_dict else iter(item), is_dict, id(item)))
      open_ids.add(id(item))
      yield ("{" if is_dict else "[") + newline(len(stack), len(stack))
      entry = next(stack[-1][0])
      if is_dict:
        yield key_text(entry[0]) + ": "
        entry = entry[1]
      item = entry
      continue
    # `item` is written: go on with the next item of the innermost open container.
    while stack:
      items, is_dict, container_id = stack[-1]
      entry = next(items, _END)
      if entry is not _END:
        yield item_separator + newline(len(stack), len(stack))
        if is_dict:
          yield key_text(entry[0]) + ": "
          entry = entry[1]
        item = entry
        break
      stack.pop()
      open_ids.discard(container_id)
      yield newline(len(stack), len(stack) + 1) + ("}" if is_dict else "]")
    else:
      return


_END = object()


def _float_text(value: float) -> str:
  """As `json` writes a float (allow_nan=True)."""
  if value != value:
    return "NaN"
  if value == float("inf"):
    return "Infinity"
  if value == float("-inf"):
    return "-Infinity"
  return float.__repr__(value)
