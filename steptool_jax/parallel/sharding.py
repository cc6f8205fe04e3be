"""From logical axis annotations to `NamedSharding`s, and the context that activates them."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from steptool_jax.parallel.rules import LOGICAL_AXIS_RULES, LogicalRules


def logical_specs(boxed_tree: Any) -> Any:
  """The logical `PartitionSpec` of every leaf of a tree of `nn.LogicallyPartitioned` boxes.

  Leaves without annotations get `PartitionSpec()` (replicated). Works on the abstract
  tree from `jax.eval_shape(model.init, ...)`, so nothing is allocated.
  """
  return nn.get_partition_spec(boxed_tree)


def logical_to_shardings(specs: Any, mesh: Mesh, rules: LogicalRules = LOGICAL_AXIS_RULES) -> Any:
  """`NamedSharding`s on `mesh` for a tree of logical `PartitionSpec`s."""
  return nn.logical_to_mesh_sharding(specs, mesh, list(rules))


def spec_sharding(logical_axes: tuple[str | None, ...], mesh: Mesh,
                  rules: LogicalRules = LOGICAL_AXIS_RULES) -> NamedSharding:
  """The sharding of one array from its logical axis names, e.g. `("batch", "length")`."""
  return NamedSharding(mesh, nn.logical_to_mesh_axes(logical_axes, list(rules)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def sharded_abstract(abstract: Any, shardings: Any, dtype: Any = None) -> Any:
  """`ShapeDtypeStruct`s of `abstract`'s leaves carrying the matching `shardings` (what an
  Orbax restore writes straight into); `dtype` overrides every leaf's dtype."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, dtype or a.dtype, sharding=s), abstract, shardings)


@contextlib.contextmanager
def sharding_context(mesh: Mesh, rules: LogicalRules = LOGICAL_AXIS_RULES) -> Iterator[None]:
  """Makes the model's logical constraints bind to `mesh` (inside it, jit the step)."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(list(rules)):
    yield
