"""JSON without recursion: the same text and values as the stdlib `json`, at any depth."""

import json

from hypothesis import given, settings, strategies as st
import pytest

from steptool_jax.data import jsonio

SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
VALUES = st.recursive(SCALARS, lambda children: st.lists(children, max_size=4)
                      | st.dictionaries(st.text(max_size=5), children, max_size=4), max_leaves=25)


def _same(a, b):
  """Equal JSON values, NaN equal to NaN (json.dumps writes both as NaN)."""
  return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@settings(max_examples=200, deadline=None)
@given(VALUES, st.sampled_from([None, 0, 1, 2, "\t"]), st.booleans())
def test_encoder_writes_what_json_dumps_writes(value, indent, ensure_ascii):
  expected = json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)
  assert "".join(jsonio.iter_encode(value, indent=indent, ensure_ascii=ensure_ascii)) == expected


@settings(max_examples=200, deadline=None)
@given(VALUES, st.integers(0, 4))
def test_encoder_beyond_indent_depth_is_one_line_and_the_same_value(value, depth):
  text = "".join(jsonio.iter_encode(value, indent=2, indent_depth=depth))
  assert _same(json.loads(text), value)
  # Up to `depth` the layout is json.dumps's: lines indented by at most `depth` levels.
  assert all(len(line) - len(line.lstrip(" ")) <= 2 * depth for line in text.split("\n"))


def test_encoder_refuses_what_json_refuses():
  with pytest.raises(TypeError):
    "".join(jsonio.iter_encode({"a": object()}))
  loop = []
  loop.append(loop)
  with pytest.raises(ValueError, match="Circular reference"):
    "".join(jsonio.iter_encode(loop))


@settings(max_examples=200, deadline=None)
@given(VALUES, st.sampled_from([None, 1]))
def test_iterative_parser_reads_what_json_loads_reads(value, indent):
  text = json.dumps(value, indent=indent)
  hook = jsonio._PairsHook()
  assert _same(jsonio._loads_iteratively(text, hook, 1000), json.loads(text))
  assert hook.duplicates == []


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='{}[],:" \n0123456789.eE-+tfnruaslNIy\\', max_size=30))
def test_iterative_parser_accepts_and_refuses_exactly_what_json_loads_does(text):
  try:
    expected = json.loads(text)
  except json.JSONDecodeError as e:
    with pytest.raises(json.JSONDecodeError) as info:
      jsonio._loads_iteratively(text, jsonio._PairsHook(), 1000)
    assert info.value.pos == e.pos
    return
  assert _same(jsonio._loads_iteratively(text, jsonio._PairsHook(), 1000), expected)


def _chain(depth):
  """[{"a": [{"a": ... []}]}]: 2 * depth + 1 levels, the shape of a converted-answer chain."""
  value = []
  for _ in range(depth):
    value = [{"a": value}]
  return value


def test_nesting_far_beyond_the_recursion_limit_round_trips():
  value = _chain(20_000)
  text = "".join(jsonio.iter_encode(value))
  parsed, duplicates = jsonio.loads_checked(text)
  assert duplicates == []
  # Walk both without recursion: the same shape all the way down.
  depth = 0
  while parsed:
    assert list(parsed[0]) == ["a"]
    parsed = parsed[0]["a"]
    depth += 1
  assert depth == 20_000


def test_depth_cap_is_a_clean_error():
  with pytest.raises(jsonio.JSONDepthError, match="nesting deeper than 100 levels at line 1, column 101"):
    jsonio.loads_checked("[" * 5000 + "]" * 5000, max_depth=100)


def test_repeated_keys_are_reported_with_the_object_that_has_them():
  value, duplicates = jsonio.loads_checked('{"a": 1, "b": {"c": 1, "c": 2, "c": 3}, "a": 2}')
  assert value == {"a": 2, "b": {"c": 3}}
  assert [(d.key, d.count) for d in duplicates] == [("c", 3), ("a", 2)]
  assert duplicates[0].obj is value["b"] and duplicates[1].obj is value


def test_repeated_keys_are_reported_on_the_iterative_path_too():
  text = '{"q": ' + "[" * 3000 + '{"k": 1, "k": 2}' + "]" * 3000 + "}"
  with pytest.raises(RecursionError):
    json.loads(text)
  value, duplicates = jsonio.loads_checked(text)
  assert [(d.key, d.count) for d in duplicates] == [("k", 2)]


def test_integer_too_long_for_python_is_a_value_error_on_both_paths():
  digits = "9" * 5000
  with pytest.raises(ValueError, match="digits"):
    jsonio.loads_checked(f"[{digits}]")
  with pytest.raises(ValueError, match="digits"):
    jsonio.loads_checked("[" * 3000 + digits + "]" * 3000)
