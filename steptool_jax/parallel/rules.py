"""The one table that maps logical axis names to mesh axes.

Modules annotate parameters and activations with logical names only (`batch`, `embed`,
`heads`, ...); this table decides how each is laid out on the mesh. Changing the
parallelism strategy is an edit here (or a config override of the mesh sizes), never in
the model code.

Order matters: rules are tried top to bottom and a mesh axis is used at most once per
array, so for an activation `[batch, length, embed]` the batch takes `fsdp` first and
`embed` stays whole, while a kernel `[embed, heads, head_dim]` gets `embed -> fsdp`.
"""

from __future__ import annotations

from typing import Sequence

# Mesh axes, outermost first: pure data parallelism, fully-sharded data parallelism
# (parameters and optimiser state split, gathered per layer), tensor parallelism.
MESH_AXES: tuple[str, ...] = ("data", "fsdp", "tensor")

LogicalRules = Sequence[tuple[str, str | tuple[str, ...] | None]]

LOGICAL_AXIS_RULES: LogicalRules = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("embed", "fsdp"),
    ("length", None),
    ("cache_length", None),
    ("head_dim", None),
    ("layers", None),
    ("lora_rank", None),
)
