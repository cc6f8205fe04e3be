"""Bounded literal parsing: the values `ast.literal_eval` gives, without its syntax tree."""

import ast
import math

from hypothesis import given, settings, strategies as st
import pytest

from steptool_jax.data import literals
from steptool_jax.data.literals import LiteralError, parse_literal, scan_flat

SCALARS = (st.text() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.booleans()
           | st.none())


def _same(a, b):
  """Equal values of equal types, element by element (1 == 1.0 == True would hide a wrong type)."""
  if isinstance(a, dict):
    return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
  if isinstance(a, list):
    return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
  return type(a) is type(b) and (a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)))


@settings(max_examples=200, deadline=None)
@given(st.lists(SCALARS, max_size=8) | st.dictionaries(st.text(max_size=8), SCALARS, max_size=5))
def test_flat_scan_gives_what_literal_eval_gives(value):
  text = repr(value)
  assert _same(scan_flat(text), ast.literal_eval(text))
  assert _same(parse_literal(text), ast.literal_eval(text))


# Texts in the neighbourhood of flat literals: spacing, quotes, escapes, signs, exponents, names.
NEAR_LITERALS = st.lists(st.sampled_from([
    "[", "]", "{", "}", ",", ":", " ", "\n", "'a'", '"b"', "'\\n'", "'\\x41'", "'\\''", "'\\", "1", "-2", "+3",
    "0", "00", "01", "1.5", ".5", "5.", "1e3", "1E-2", "1_0", "0x1", "True", "None", "False", "NaN", "Infinity",
    "-Infinity", "nan", "true", "#", "()", "u'x'", "1j"]), max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(NEAR_LITERALS)
def test_flat_scan_never_accepts_what_python_reads_differently(text):
  try:
    value = scan_flat(text.strip())
  except literals._NotFlat:
    return
  except LiteralError:
    return
  try:
    expected = ast.literal_eval(text.strip())
  except (ValueError, SyntaxError):
    # Only JSON's NaN/Infinity spellings are read beyond Python's grammar.
    assert any(name in text for name in ("NaN", "Infinity")), text
    return
  assert _same(value, expected), text


@settings(max_examples=300, deadline=None)
@given(NEAR_LITERALS)
def test_parse_literal_raises_only_literal_error(text):
  try:
    parse_literal(text)
  except LiteralError:
    pass


def test_repeated_dict_key_is_an_error_short_and_long():
  with pytest.raises(LiteralError, match="found the key str 'name' twice"):
    parse_literal("{'name': 'a', 'name': 'b'}")
  padding = "x" * literals.MAX_LITERAL_EVAL_CHARS
  with pytest.raises(LiteralError, match="found the key str 'name' twice"):
    parse_literal(f"{{'name': 'a', 'pad': '{padding}', 'name': 'b'}}")


def test_long_text_in_another_spelling_is_refused_not_evaluated():
  text = "[" + "1_0, " * literals.MAX_LITERAL_EVAL_CHARS + "]"
  with pytest.raises(LiteralError, match="not in the plain flat form"):
    parse_literal(text)
  assert parse_literal("[1_0, 2]") == [10, 2]  # short: ast.literal_eval reads it as before


def test_text_over_the_cap_is_refused_before_parsing():
  with pytest.raises(LiteralError, match=f"at most {literals.MAX_LITERAL_CHARS:,} are read"):
    parse_literal("[" + " " * literals.MAX_LITERAL_CHARS + "]")


def test_integer_too_long_to_convert_is_a_clean_error():
  digits = "9" * 5000
  with pytest.raises(LiteralError):
    parse_literal(f"[{digits}]")
  with pytest.raises(LiteralError, match="integer of 5,000 digits"):
    scan_flat(f"[{digits}, '{'x' * literals.MAX_LITERAL_EVAL_CHARS}']")
