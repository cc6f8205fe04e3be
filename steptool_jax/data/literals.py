"""The Python literals of the original files, parsed in time and memory linear in their size.

Two files of the original project hold Python literals: every cell of the step-grained TSV
is a list of strings or numbers (`['p0', 'p1']`, `[0.5, 1.0]`), and every step of a reward
annotation is a flat dict of strings (`{'name': 't', 'arguments': '{}', 'response': '...'}`).
`ast.literal_eval` parses them correctly but builds a syntax tree first: a 5 MB cell of
numbers peaks above 1 GB (50 MB: 11 GB) before the value is even checked. The scanner below
reads exactly these flat shapes token by token; a string token is decoded by
`ast.literal_eval` on that one token (one node, so Python's own escape rules at no
amplification), a number by `int`/`float`.

Text in another spelling that Python (or, for `NaN`/`Infinity`, JSON) accepts — comments,
implicit concatenation, prefixed or triple-quoted strings, nested containers — still goes
to `ast.literal_eval` (then `json.loads`) as before, but only up to
`MAX_LITERAL_EVAL_CHARS`, where the syntax tree stays small. Nothing is ever evaluated.
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
import sys
import warnings
from typing import Any, Iterator

from steptool_jax.data.errors import describe

# Longest literal read at all (a TSV cell, an annotation step): far above any real one.
MAX_LITERAL_CHARS = 16 * 2**20
# Longest literal in another spelling given to ast.literal_eval: its syntax tree costs up to
# about 250 bytes per character of input (a list of one-digit numbers), so 64 KiB is ~16 MB.
MAX_LITERAL_EVAL_CHARS = 64 * 2**10

_SPACE = r"[ \t\f\r\n]*"  # what Python skips between tokens inside brackets
# Quoted, no raw line break or NUL inside (Python rejects those); `\\.` also takes an escaped newline.
_STRING = r"""'[^'\\\n\r\x00]*(?:\\.[^'\\\n\r\x00]*)*'|"[^"\\\n\r\x00]*(?:\\.[^"\\\n\r\x00]*)*\""""
# Decimal numbers as `repr` writes them (and more); an integer has no leading zeros (Python's rule).
_FLOAT = r"[-+]?(?:(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)(?![0-9A-Za-z_.])"
_INT = r"[-+]?(?:0+|[1-9][0-9]*)(?![0-9A-Za-z_.])"
_NAME = r"(?:True|False|None|NaN|-?Infinity)(?![0-9A-Za-z_])"
# One item: its token, spaces, and the `,` or `:` after it (none before the closing bracket).
_ITEM = re.compile(rf"(?:(?P<string>{_STRING})|(?P<float>{_FLOAT})|(?P<int>{_INT})|(?P<name>{_NAME})){_SPACE}"
                   rf"(?P<separator>[,:]?){_SPACE}", re.DOTALL)
_SPACES = re.compile(_SPACE)
_NAMES = {"True": True, "False": False, "None": None, "NaN": float("nan"), "Infinity": float("inf"),
          "-Infinity": float("-inf")}


class LiteralError(ValueError):
  """The text is no literal that can be read; the message says what was found instead."""


def parse_literal(text: str) -> Any:
  """The value of a Python literal; the caller checks the type it expects.

  Up to `MAX_LITERAL_EVAL_CHARS` (after stripping spaces): whatever `ast.literal_eval` reads
  (or, failing that, `json.loads`, for the `NaN`/`Infinity` spellings). Longer, up to
  `MAX_LITERAL_CHARS`: the flat forms of `scan_flat` only. A dict literal that gives a key
  twice is an error either way (Python would keep only the last value).

  Raises:
    LiteralError: the text is unparseable, too long, or repeats a dict key.
  """
  if len(text) > MAX_LITERAL_CHARS:
    raise LiteralError(f"found {len(text):,} characters (at most {MAX_LITERAL_CHARS:,} are read)")
  text = text.strip()
  if len(text) <= MAX_LITERAL_EVAL_CHARS:
    return _literal_eval(text)
  try:
    return scan_flat(text)
  except _NotFlat:
    raise LiteralError(f"found {len(text):,} characters not in the plain flat form {describe(text, 40)} (up to"
                       f" {MAX_LITERAL_CHARS:,} are read in that form, in any other Python spelling up to"
                       f" {MAX_LITERAL_EVAL_CHARS:,})") from None


def scan_flat(text: str) -> list[Any] | dict[str, Any]:
  """A flat list or dict literal (`text` stripped), in one pass, one regex match per item:
  `[...]` of strings, numbers, True/False/None and JSON's NaN/Infinity, or `{...}` of
  string keys and such values.

  Raises:
    LiteralError: a dict repeats a key, an integer is too long to convert, an escape is bad.
    _NotFlat: the text is not in this form.
  """
  return _scan(text)


def _literal_eval(text: str) -> Any:
  """`ast.literal_eval` (then `json.loads`) of a short text, refusing a repeated dict key."""
  try:
    with _quiet():
      tree = ast.parse(text, mode="eval")
    value = ast.literal_eval(tree)
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    pass
  else:
    if isinstance(value, dict) and len(value) != len(tree.body.keys):
      keys = [key.value for key in tree.body.keys]  # literal_eval took them all: constants
      repeated = next(key for i, key in enumerate(keys) if key in keys[:i])
      raise LiteralError(f"found the key {describe(repeated)} twice (a dict literal keeps only the last)")
    return value
  try:  # NaN, Infinity: JSON spellings, accepted so that they can be named in the error
    return json.loads(text)
  except (ValueError, RecursionError):
    raise LiteralError(f"found unparseable text {describe(text)}") from None


class _NotFlat(Exception):
  """The text is not in the flat form the scanner reads (it may still be a literal)."""


def _scan(text: str) -> list[Any] | dict[Any, Any]:
  """The flat list or dict of `text` (stripped), one regex match per item."""
  if text[:1] not in ("[", "{") or text[-1:] != ("]" if text[:1] == "[" else "}"):
    raise _NotFlat
  is_dict = text[0] == "{"
  end = len(text) - 1
  match_item = _ITEM.match
  values: list[Any] = []
  escaped: list[int] = []  # positions in `values` of string tokens with escapes, decoded below
  pos = _SPACES.match(text, 1).end()
  while pos < end:
    item = match_item(text, pos, end)
    if item is None:
      raise _NotFlat
    string, real, integer, name, separator = item.groups()
    if string is not None:
      if "\\" in string:
        escaped.append(len(values))
        values.append(string)
      else:
        values.append(string[1:-1])  # no escapes: the text between the quotes is the value
    elif real is not None:
      values.append(float(real))
    elif integer is not None:
      if len(integer) > _MAX_INT_DIGITS:
        raise LiteralError(f"found an integer of {len(integer):,} digits (at most {_MAX_INT_DIGITS:,})")
      values.append(int(integer))
    else:
      values.append(_NAMES[name])
    pos = item.end()
    if is_dict and (separator == ":") == (len(values) % 2 == 0):
      raise _NotFlat  # a dict alternates key: value, value,
    if not is_dict and separator == ":":
      raise _NotFlat
    if not separator and pos < end:
      raise _NotFlat
  if is_dict and len(values) % 2:
    raise _NotFlat
  _decode_escaped(values, escaped)
  if not is_dict:
    return values
  pairs: dict[Any, Any] = {}
  for key, value in zip(values[0::2], values[1::2]):
    if not isinstance(key, str):
      raise _NotFlat
    if key in pairs:
      raise LiteralError(f"found the key {describe(key)} twice (a dict literal keeps only the last)")
    pairs[key] = value
  return pairs


def _decode_escaped(values: list[Any], positions: list[int]) -> None:
  """Replaces the string tokens at `positions` by their values: `ast.literal_eval` of a list
  of a few of them at a time (Python's own escape rules; each batch a small tree)."""
  start = 0
  while start < len(positions):
    stop, size = start, 0
    while stop < len(positions) and (stop == start or size + len(values[positions[stop]]) < MAX_LITERAL_EVAL_CHARS):
      size += len(values[positions[stop]]) + 1
      stop += 1
    batch = positions[start:stop]
    try:
      with _quiet():
        decoded = ast.literal_eval("[" + ",".join(values[i] for i in batch) + "]")
    except (ValueError, SyntaxError):
      raise LiteralError("found a string literal with a bad escape sequence") from None
    for i, value in zip(batch, decoded):
      values[i] = value
    start = stop


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
  """No "invalid escape sequence" warnings from the data: Python keeps such a backslash, and
  a warning about `<unknown>:1` would only confuse whoever reads the data."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", SyntaxWarning)
    yield


# Python refuses to convert longer decimal integers (3.11+), and they are no step count or reward.
_MAX_INT_DIGITS = getattr(sys, "get_int_max_str_digits", lambda: 0)() or 4300
