"""Where a jitted step's time goes, per compiled operation: a profiler trace read back as a table.

    trace = profile_ops.trace_runs(fn, runs=2, directory=DIR)      # jax.profiler, perfetto JSON
    rows = profile_ops.op_times(trace, hlo_text, runs=2)            # ms per run, per XLA op
    print(profile_ops.format_table(rows))

Each XLA thunk (a fusion, a library matmul, a copy) is one event of the trace; its name is the
instruction's name in the compiled HLO, whose `op_name` metadata says which part of the model
it came from (e.g. `.../layers/mlp/gate_proj/dot_general`). Rows are grouped into kinds: matmul
work (XLA dots, and fusions whose computation holds a dot: the library fusions `ynn_fusion`,
`xnn_fusion`, `onednn_fusion` also take reductions and elementwise work), copies and transposes, dynamic slices and updates (the layer scan's reads and
writes of stacked arrays), broadcasts (buffers filled with a constant, e.g. zeroed gradient
accumulators), and other elementwise fusions.

Thunks may run concurrently on a multi-core CPU, so the times add up to more than the wall
time; the shares between kinds are what the table is for.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import gzip
import json
import os
import re
from typing import Any, Callable

import jax

# Host-side and executor events, not an operation of the program.
SKIP_PREFIXES = ("ThunkExecutor", "$", "SlinkyThreadPool", "PjitFunction", "CommonPjRt", "while", "conditional",
                 "call")


@dataclasses.dataclass(frozen=True)
class OpTime:
  name: str  # the instruction's name in the compiled HLO
  kind: str
  ms_per_run: float
  calls_per_run: float
  shape: str  # the instruction's result shape, when found in the HLO
  scope: str  # the last parts of its op_name metadata, when found


def trace_runs(fn: Callable[[], Any], *, runs: int, directory: str) -> str:
  """Runs `fn()` (already compiled) `runs` times under the profiler; returns the trace file."""
  with jax.profiler.trace(directory, create_perfetto_trace=True):
    for _ in range(runs):
      jax.block_until_ready(fn())
  files = glob.glob(os.path.join(directory, "**", "*.trace.json.gz"), recursive=True)
  if not files:
    raise FileNotFoundError(f"{directory}: the profiler wrote no perfetto trace (*.trace.json.gz)")
  return max(files, key=os.path.getmtime)


def kind_of(name: str, has_dot: bool) -> str:
  base = re.sub(r"[.\d]+$", "", name)
  if has_dot or base.startswith(("dot", "convolution")):
    return "matmul"
  if "dynamic-slice" in base or "dynamic-update-slice" in base:
    return "dynamic slice/update"
  if base.startswith("wrapped_broadcast") or base == "broadcast":
    return "broadcast"
  if base.startswith(("copy", "transpose")) or "_copy" in base or "transpose" in base:
    return "copy/transpose"
  return "elementwise/reduce"


def hlo_instructions(hlo_text: str) -> dict[str, tuple[str, str, bool]]:
  """Instruction name -> (result shape, short op_name scope, whether the computation it calls
  holds a dot) of a compiled module's text."""
  with_dot = {block.split(" ", 1)[0].lstrip("%") for block in re.split(r"\n(?=\S)", hlo_text)
              if re.search(r" dot\(", block)}
  found = {}
  for match in re.finditer(r"^\s*(?:ROOT )?%(\S+) = (\S+) ([^\n]*)$", hlo_text, re.M):
    rest = match.group(3)
    scope = re.search(r'op_name="([^"]+)"', rest)
    calls = re.search(r"calls=%([^,\s]+)", rest)
    found[match.group(1)] = (match.group(2), "/".join(scope.group(1).split("/")[-3:]) if scope else "",
                             bool(calls and calls.group(1) in with_dot))
  return found


def op_times(trace_file: str, hlo_text: str, *, runs: int) -> list[OpTime]:
  """Per-operation time (ms per run) of a trace, most expensive first."""
  with gzip.open(trace_file) as f:
    events = json.load(f)["traceEvents"]
  total: collections.Counter = collections.Counter()
  calls: collections.Counter = collections.Counter()
  for event in events:
    if event.get("ph") == "X" and not event["name"].startswith(SKIP_PREFIXES):
      total[event["name"]] += event["dur"] / 1e3  # microseconds -> ms
      calls[event["name"]] += 1
  info = hlo_instructions(hlo_text)
  rows = []
  for name, ms in total.most_common():
    shape, scope, has_dot = info.get(name, ("", "", False))
    rows.append(OpTime(name, kind_of(name, has_dot), ms / runs, calls[name] / runs, shape, scope))
  return rows


def format_table(rows: list[OpTime], *, top: int = 25) -> str:
  by_kind: collections.Counter = collections.Counter()
  for row in rows:
    by_kind[row.kind] += row.ms_per_run
  whole = sum(by_kind.values()) or 1.0
  lines = ["kind                    ms/run   share"]
  lines += [f"{kind:22s} {ms:8.1f}  {100 * ms / whole:5.1f}%" for kind, ms in by_kind.most_common()]
  lines += ["", f"top {top} operations      ms/run  calls  kind                  shape / model scope"]
  lines += [f"{r.name[:24]:24s} {r.ms_per_run:7.1f} {r.calls_per_run:6.0f}  {r.kind:20s}  {r.shape[:32]} {r.scope}"
            for r in rows[:top]]
  return "\n".join(lines)
