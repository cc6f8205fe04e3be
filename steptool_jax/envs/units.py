"""Unit conversion for the unit-converter tool: length, mass, time, volume, speed, temperature."""

from __future__ import annotations

# unit -> (dimension, size in the dimension's base unit)
_LINEAR: dict[str, tuple[str, float]] = {
    "m": ("length", 1.0), "km": ("length", 1000.0), "cm": ("length", 0.01), "mm": ("length", 0.001),
    "mi": ("length", 1609.344), "ft": ("length", 0.3048), "in": ("length", 0.0254),
    "kg": ("mass", 1.0), "g": ("mass", 0.001), "lb": ("mass", 0.45359237), "oz": ("mass", 0.028349523125),
    "s": ("time", 1.0), "min": ("time", 60.0), "h": ("time", 3600.0), "day": ("time", 86400.0),
    "l": ("volume", 1.0), "ml": ("volume", 0.001), "gal": ("volume", 3.785411784),
    "km/h": ("speed", 1.0), "mph": ("speed", 1.609344), "m/s": ("speed", 3.6),
}
_TEMPERATURE = ("C", "F", "K")
UNITS = tuple(_LINEAR) + _TEMPERATURE


class UnitError(ValueError):
  """Unknown unit, or units of different dimensions."""


def _to_celsius(value: float, unit: str) -> float:
  return {"C": value, "F": (value - 32.0) * 5.0 / 9.0, "K": value - 273.15}[unit]


def _from_celsius(value: float, unit: str) -> float:
  return {"C": value, "F": value * 9.0 / 5.0 + 32.0, "K": value + 273.15}[unit]


def convert_units(value: float, from_unit: str, to_unit: str) -> float:
  """`value` in `from_unit` expressed in `to_unit`, rounded to 4 decimals.

  Raises:
    UnitError: for an unknown unit or a conversion across dimensions.
  """
  for unit in (from_unit, to_unit):
    if unit not in _LINEAR and unit not in _TEMPERATURE:
      raise UnitError(f"unknown unit {unit!r}; known units: {', '.join(UNITS)}")
  if (from_unit in _TEMPERATURE) != (to_unit in _TEMPERATURE):
    raise UnitError(f"cannot convert {from_unit} to {to_unit}")
  if from_unit in _TEMPERATURE:
    return round(_from_celsius(_to_celsius(value, from_unit), to_unit), 4)
  (dim_from, size_from), (dim_to, size_to) = _LINEAR[from_unit], _LINEAR[to_unit]
  if dim_from != dim_to:
    raise UnitError(f"cannot convert {dim_from} ({from_unit}) to {dim_to} ({to_unit})")
  return round(value * size_from / size_to, 4)
