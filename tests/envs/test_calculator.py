"""The calculator evaluates arithmetic only, with bounded sizes."""

import operator
import random

import pytest
from hypothesis import given, settings, strategies as st

from steptool_jax.envs.calculator import CalculatorError, calculate


@pytest.mark.parametrize("expression, expected", [
    ("1 + 2 * 3", 7),
    ("(120.5 + 80) * 3", 601.5),
    ("22118.11 * 5", 110590.55),
    ("14094034 - 2102650", 11991384),
    ("7 // 2 + 7 % 2", 4),
    ("-2 ** 2", -4),  # Python precedence: -(2**2)
    ("2 ** -1", 0.5),
    ("abs(-3) + max(1, 4, 2) - min(5, 6) + round(2.567, 2)", 4.57),
    ("1 / 3", 0.333333),
])
def test_hand_checked_values(expression, expected):
  assert calculate(expression) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("expression", [
    "__import__('os').system('true')", "x + 1", "(1).__class__", "'a' * 3", "[1, 2]",
    "1 if 1 else 2", "lambda: 1", "9 ** 9 ** 9", "10 ** 20", "1 / 0", "5 % 0", "", "1 +",
    "1" * 201, "open('f')", "True + 1", "max()", "round(1.5, 2, 3)",
])
def test_rejects_anything_else(expression):
  with pytest.raises(CalculatorError):
    calculate(expression)


def test_rejects_non_strings():
  with pytest.raises(CalculatorError):
    calculate(12)  # type: ignore[arg-type]


_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def _random_expression(rng: random.Random, depth: int) -> tuple[str, int, bool]:
  """An integer expression, its value computed while it is built (the reference), and
  whether some intermediate value leaves the calculator's range (1e15)."""
  if depth == 0 or rng.random() < 0.3:
    value = rng.randint(0, 999)
    return str(value), value, False
  symbol = rng.choice(sorted(_OPS))
  left, a, left_big = _random_expression(rng, depth - 1)
  right, b, right_big = _random_expression(rng, depth - 1)
  value = _OPS[symbol](a, b)
  return f"({left} {symbol} {right})", value, left_big or right_big or abs(value) > 10**15


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32))
def test_matches_a_reference_built_with_the_expression(seed):
  expression, value, out_of_range = _random_expression(random.Random(seed), depth=4)
  if out_of_range:
    with pytest.raises(CalculatorError):
      calculate(expression)
  else:
    assert calculate(expression) == value
