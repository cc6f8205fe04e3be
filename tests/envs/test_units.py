"""Unit conversion against hand-checked values."""

import pytest

from steptool_jax.envs.units import UnitError, convert_units


@pytest.mark.parametrize("value, src, dst, expected", [
    (21, "C", "F", 69.8),          # 21 * 9/5 + 32
    (-40, "F", "C", -40.0),
    (0, "K", "C", -273.15),
    (100, "km", "mi", 62.1371),    # 100000 / 1609.344
    (119, "min", "h", 1.9833),     # 119 / 60
    (90, "min", "h", 1.5),
    (1, "gal", "l", 3.7854),
    (2.5, "kg", "lb", 5.5116),     # 2.5 / 0.45359237
    (36, "km/h", "m/s", 10.0),
])
def test_hand_checked_values(value, src, dst, expected):
  assert convert_units(value, src, dst) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("src, dst", [("km", "kg"), ("C", "km"), ("min", "F"), ("parsec", "km"), ("km", "")])
def test_rejects_unknown_units_and_mixed_dimensions(src, dst):
  with pytest.raises(UnitError):
    convert_units(1.0, src, dst)
