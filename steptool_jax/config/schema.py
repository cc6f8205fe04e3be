"""Typed config sections <-> the `ml_collections.ConfigDict` that config files and flags edit.

A run's settings are frozen dataclasses, one per concern (`config.sections`). A section owns
its fields' defaults, their documentation (the comment beside each field) and its checks
(`__post_init__`, raising `ConfigError`). The ConfigDict that `configs/*.py` edit and that
`--config.a.b=value` overrides is generated from the defaults (`to_config_dict`), so a field
exists in exactly one place; `from_config_dict` reads it back into the dataclasses, checking
types strictly, rejecting unknown fields with a suggestion and naming every problem by its
dotted path (`ppo.vf_coef: expected ...`).

Field types understood: `bool`, `int`, `float` (an int is accepted), `str`, `tuple[str, ...]`
/ `tuple[int, ...]`, `dict[str, int]` (the mesh: its keys are data, not fields), and nested
sections.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from typing import Any, Mapping, TypeVar

import ml_collections

T = TypeVar("T")


class ConfigError(ValueError):
  """A bad config value; `str(error)` is `field: what was expected, what was found`.

  `suggestion` (unknown fields) is the closest known field, at the same depth as `field`.
  """

  def __init__(self, field: str, message: str, *, suggestion: str = ""):
    hint = f"; did you mean {suggestion!r}?" if suggestion else ""
    super().__init__(f"{field}: {message}{hint}")
    self.field = field
    self.message = message
    self.suggestion = suggestion

  def within(self, prefix: str) -> ConfigError:
    """The same error with the field's path (and the suggestion's) under `prefix` (a section name)."""
    return ConfigError(f"{prefix}.{self.field}" if self.field else prefix, self.message,
                       suggestion=f"{prefix}.{self.suggestion}" if self.suggestion else "")


# --- checks sections use in __post_init__ ------------------------------------------------------------


def one_of(field: str, value: Any, options: tuple[Any, ...]) -> None:
  if value not in options:
    raise ConfigError(field, f"expected one of {options}, found {value!r}")


def number(field: str, value: Any, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> None:
  """A finite number within the bounds (`low_open`: strictly above `low`, ...)."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise ConfigError(field, f"expected a finite number, found {value!r}")
  below = low is not None and (value <= low if low_open else value < low)
  above = high is not None and (value >= high if high_open else value > high)
  if below or above:
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    span = f"{left}{'-inf' if low is None else format(low, 'g')}, {'inf' if high is None else format(high, 'g')}{right}"
    raise ConfigError(field, f"expected a number in {span}, found {value!r}")


def positive(field: str, value: Any, *, allow_zero: bool = False) -> None:
  """A finite number > 0 (>= 0 with `allow_zero`): NaN and inf are refused too."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
      value < 0 if allow_zero else value <= 0):
    raise ConfigError(field, f"expected a {'non-negative' if allow_zero else 'positive'} number, found {value!r}")


MAX_SEED = 2**31 - 1  # seeds become JAX keys and numpy generators: int32 fits both everywhere


def seed(field: str, value: Any) -> None:
  """An integer seed in [0, MAX_SEED] (a bool, a float or a huge integer is refused)."""
  if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
    raise ConfigError(field, f"expected an integer in [0, {MAX_SEED}], found {value!r}")


# --- dataclass <-> ConfigDict ------------------------------------------------------------------------


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def is_section(tp: Any) -> bool:
  return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def to_plain(section: Any) -> dict[str, Any]:
  """A section as nested plain dicts (tuples stay tuples)."""
  out: dict[str, Any] = {}
  for f in dataclasses.fields(section):
    value = getattr(section, f.name)
    out[f.name] = to_plain(value) if dataclasses.is_dataclass(value) else (
        dict(value) if isinstance(value, Mapping) else value)
  return out


def to_config_dict(section: Any) -> ml_collections.ConfigDict:
  """The ConfigDict of a section instance (usually the defaults: `to_config_dict(RunConfig())`)."""
  return ml_collections.ConfigDict(to_plain(section))


def flat_fields(cls: type, prefix: str = "") -> list[str]:
  """Every leaf field of a section class as a dotted path (a dict-typed field is one leaf)."""
  out = []
  for name, tp in _field_types(cls).items():
    if is_section(tp):
      out.extend(flat_fields(tp, f"{prefix}{name}."))
    else:
      out.append(prefix + name)
  return out


def _suggestion(name: str, known: list[str]) -> str:
  close = difflib.get_close_matches(name, known, n=1)
  return close[0] if close else ""


def _coerce(field: str, value: Any, tp: Any) -> Any:
  """`value` checked against the annotation `tp` (and made a tuple/dict/float where needed)."""
  origin = typing.get_origin(tp)
  if tp is bool:
    if not isinstance(value, bool):
      raise ConfigError(field, f"expected True or False, found {value!r}")
    return value
  if tp is int:
    if isinstance(value, bool) or not isinstance(value, int):
      raise ConfigError(field, f"expected an integer, found {value!r}")
    return value
  if tp is float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ConfigError(field, f"expected a number, found {value!r}")
    return float(value)
  if tp is str:
    if not isinstance(value, str):
      raise ConfigError(field, f"expected a string, found {value!r}")
    return value
  if origin is tuple:
    item = typing.get_args(tp)[0]
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
      raise ConfigError(field, f"expected a tuple, found {value!r}")
    return tuple(_coerce(f"{field}[{i}]", v, item) for i, v in enumerate(value))
  if origin is dict:
    key_type, value_type = typing.get_args(tp)
    if not isinstance(value, (Mapping, ml_collections.ConfigDict)):
      raise ConfigError(field, f"expected a mapping, found {value!r}")
    return {_coerce(f"{field} key", k, key_type): _coerce(f"{field}.{k}", v, value_type) for k, v in value.items()}
  if origin in (typing.Union, types.UnionType):
    raise TypeError(f"{field}: unions are not config types (use '' or 0 for 'unset')")
  raise TypeError(f"{field}: unsupported config type {tp!r}")


def from_config_dict(cls: type[T], values: Mapping[str, Any] | ml_collections.ConfigDict) -> T:
  """The section `cls` from a (possibly partial) mapping; missing fields keep their defaults.

  Raises:
    ConfigError: an unknown field (with the closest known one), a value of the wrong type,
      or a failed section check, named by its dotted path.
  """
  types_ = _field_types(cls)
  items = values.items() if not isinstance(values, ml_collections.ConfigDict) else values.items(preserve_field_references=False)
  kwargs: dict[str, Any] = {}
  for name, value in items:
    if name not in types_:
      raise ConfigError(name, "unknown config field", suggestion=_suggestion(name, list(types_)))
    tp = types_[name]
    if is_section(tp):
      if not isinstance(value, (Mapping, ml_collections.ConfigDict)):
        raise ConfigError(name, f"expected a section (a mapping of fields), found {value!r}")
      try:
        kwargs[name] = from_config_dict(tp, value)
      except ConfigError as e:
        raise e.within(name) from None
    else:
      kwargs[name] = _coerce(name, value, tp)
  return cls(**kwargs)


def replace(section: T, **changes: Any) -> T:
  """`dataclasses.replace` that reaches into sub-sections: `replace(cfg, ppo__vf_coef=0.0)`."""
  nested: dict[str, dict[str, Any]] = {}
  direct: dict[str, Any] = {}
  for key, value in changes.items():
    head, _, rest = key.partition("__")
    if rest:
      nested.setdefault(head, {})[rest] = value
    else:
      direct[head] = value
  for head, sub in nested.items():
    direct[head] = replace(getattr(section, head), **sub)
  return dataclasses.replace(section, **direct)
