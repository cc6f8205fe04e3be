"""A safe arithmetic calculator: the expression is parsed with `ast` and walked, never eval'ed.

Only numbers, parentheses, `+ - * / // % **`, unary signs and the functions `abs`, `round`,
`min`, `max` are accepted. Sizes are bounded so that a model cannot make the tool hang
(`9**9**9`) or return a number with a million digits.
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Callable

MAX_EXPRESSION_CHARS = 200
MAX_MAGNITUDE = 1e15
MAX_EXPONENT = 64

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {
    ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., float]] = {"abs": abs, "round": round, "min": min, "max": max}


class CalculatorError(ValueError):
  """The expression is not plain arithmetic, or its value is out of range."""


def _check(value: float) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise CalculatorError(f"expected a number, found {value!r}")
  if isinstance(value, float) and not math.isfinite(value):
    raise CalculatorError("the result is not a finite number")
  if abs(value) > MAX_MAGNITUDE:
    raise CalculatorError(f"the result exceeds {MAX_MAGNITUDE:g} in magnitude")
  return value


def _evaluate(node: ast.AST) -> float:
  if isinstance(node, ast.Expression):
    return _evaluate(node.body)
  if isinstance(node, ast.Constant) and type(node.value) in (int, float):
    return _check(node.value)
  if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
    return _check(_UNARY[type(node.op)](_evaluate(node.operand)))
  if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
    left, right = _evaluate(node.left), _evaluate(node.right)
    if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
      raise CalculatorError(f"exponents above {MAX_EXPONENT} are not supported")
    try:
      return _check(_BINARY[type(node.op)](left, right))
    except ZeroDivisionError:
      raise CalculatorError("division by zero") from None
    except OverflowError:
      raise CalculatorError(f"the result exceeds {MAX_MAGNITUDE:g} in magnitude") from None
  if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
      and node.func.id in _FUNCTIONS and not node.keywords and node.args):
    args = [_evaluate(arg) for arg in node.args]
    try:
      return _check(_FUNCTIONS[node.func.id](*args))
    except TypeError as e:
      raise CalculatorError(f"bad arguments to {node.func.id}: {e}") from None
  raise CalculatorError(f"unsupported element {type(node).__name__!s} in the expression")


def calculate(expression: str) -> float:
  """The value of an arithmetic expression.

  Float results are rounded to 6 decimals (the tool's display precision); integer
  arithmetic stays exact.

  Raises:
    CalculatorError: for anything but bounded arithmetic on numbers.
  """
  if not isinstance(expression, str):
    raise CalculatorError(f"expected the expression as a string, found {type(expression).__name__}")
  if len(expression) > MAX_EXPRESSION_CHARS:
    raise CalculatorError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
  try:
    tree = ast.parse(expression.strip(), mode="eval")
  except SyntaxError:
    raise CalculatorError(f"could not parse {expression!r} as arithmetic") from None
  value = _evaluate(tree)
  return round(value, 6) if isinstance(value, float) else value
