"""Meshes, logical-axis rules and shardings."""

from steptool_jax.parallel.mesh import make_mesh, resolve_axis_sizes
from steptool_jax.parallel.rules import LOGICAL_AXIS_RULES, MESH_AXES
from steptool_jax.parallel.sharding import (
    logical_specs, logical_to_shardings, replicated, sharded_abstract, sharding_context, spec_sharding)

__all__ = [
    "LOGICAL_AXIS_RULES", "MESH_AXES", "logical_specs", "logical_to_shardings", "make_mesh",
    "replicated", "resolve_axis_sizes", "sharded_abstract", "sharding_context", "spec_sharding",
]
