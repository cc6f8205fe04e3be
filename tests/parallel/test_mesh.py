"""Mesh construction from axis sizes."""

from __future__ import annotations

import jax
import pytest
from jax.sharding import AxisType

from steptool_jax.parallel import MESH_AXES, make_mesh, resolve_axis_sizes


def test_minus_one_takes_the_remaining_devices():
  assert resolve_axis_sizes({"data": 2, "fsdp": -1}, 8) == {"data": 2, "fsdp": 4, "tensor": 1}
  assert resolve_axis_sizes({"tensor": 8}, 8) == {"data": 1, "fsdp": 1, "tensor": 8}


@pytest.mark.parametrize("sizes, message", [
    ({"data": -1, "fsdp": -1}, "at most one axis"),
    ({"data": 3, "fsdp": -1}, "do not divide"),
    ({"data": 2, "tensor": 2}, "use 4 devices, have 8"),
    ({"pipeline": 2}, "unknown axes"),
    ({"fsdp": 0}, "mesh.fsdp"),
])
def test_bad_sizes_are_named(sizes, message):
  with pytest.raises(ValueError, match=message):
    resolve_axis_sizes(sizes, 8)


def test_mesh_has_every_axis_and_auto_axis_types():
  mesh = make_mesh({"data": 2, "fsdp": -1, "tensor": 2})
  assert mesh.axis_names == MESH_AXES
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert all(t == AxisType.Auto for t in mesh.axis_types)
  assert make_mesh().shape["fsdp"] == len(jax.devices())
