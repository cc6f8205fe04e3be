"""Building the device mesh from a config of axis sizes.

The axes are `data`, `fsdp` and `tensor` (see `rules.MESH_AXES`). A config gives each a
size; one of them may be -1 to take every device the others leave over.

The mesh axes are `AxisType.Auto`: the model is annotated with Flax linen logical
constraints (`nn.with_logical_constraint` lowers to `with_sharding_constraint`), which
guide the compiler's sharding propagation. `jax.make_mesh` defaults to `Explicit` axes
(sharding in types), under which every op would have to agree on its operands'
shardings by hand; that is not what linen's annotations are written for.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import jax
from jax.sharding import AxisType, Mesh

from steptool_jax.parallel.rules import MESH_AXES


def resolve_axis_sizes(axis_sizes: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """Sizes for every mesh axis (missing axes are 1), with the one -1 filled in."""
  unknown = set(axis_sizes) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"mesh: unknown axes {sorted(unknown)}; expected some of {MESH_AXES}")
  sizes = {name: int(axis_sizes.get(name, 1)) for name in MESH_AXES}
  fill = [name for name, size in sizes.items() if size == -1]
  if len(fill) > 1:
    raise ValueError(f"mesh: at most one axis may be -1, got {fill}")
  bad = [name for name, size in sizes.items() if size == 0 or size < -1]
  if bad:
    raise ValueError(f"mesh.{bad[0]}: expected a positive size or -1, got {sizes[bad[0]]}")
  known = math.prod(size for size in sizes.values() if size != -1)
  if fill:
    if num_devices % known:
      raise ValueError(f"mesh.{fill[0]}: {num_devices} devices do not divide by the other axes' {known}")
    sizes[fill[0]] = num_devices // known
  if math.prod(sizes.values()) != num_devices:
    raise ValueError(f"mesh: axis sizes {sizes} use {math.prod(sizes.values())} devices, have {num_devices}")
  return sizes


def make_mesh(axis_sizes: Mapping[str, int] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over `devices` (default: all) with axes `data`, `fsdp`, `tensor`.

  `make_mesh({"fsdp": -1})` (the default) shards everything FSDP-style;
  `make_mesh({"data": 2, "fsdp": -1, "tensor": 2})` mixes all three.
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = resolve_axis_sizes({"fsdp": -1} if axis_sizes is None else axis_sizes, len(devices))
  shape = tuple(sizes[name] for name in MESH_AXES)
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)
