"""`benchmarks/profile_ops.py`: a hand-written trace and HLO text read into the hand-computed
table, and a real profiler trace of a jitted matmul found again in it."""

from __future__ import annotations

import contextlib
import gzip
import json

import jax
import jax.numpy as jnp
import pytest

from benchmarks import profile_ops

HLO = """\
%fused_computation.1 (p0: f32[8,4], p1: f32[4,2]) -> f32[8,2] {
  %p0 = f32[8,4]{1,0} parameter(0)
  %p1 = f32[4,2]{1,0} parameter(1)
  ROOT %d = f32[8,2]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_computation.2 (p0: f32[8,4]) -> f32[8] {
  %p0 = f32[8,4]{1,0} parameter(0)
  ROOT %r = f32[8]{0} reduce(%p0, %c), dimensions={1}, to_apply=%add
}

ENTRY %main (a: f32[8,4], b: f32[4,2]) -> f32[8,2] {
  %ynn_fusion.1 = f32[8,2]{1,0} fusion(%a, %b), kind=kCustom, calls=%fused_computation.1, metadata={op_name="jit(f)/model/mlp/up_proj/dot_general"}
  %ynn_fusion.2 = f32[8]{0} fusion(%a), kind=kCustom, calls=%fused_computation.2, metadata={op_name="jit(f)/model/norm/reduce_sum"}
  %copy_bitcast_fusion.3 = f32[4,8]{1,0} fusion(%a), kind=kLoop, calls=%fused_computation.3
  %dynamic-slice_bitcast_fusion = f32[4]{0} fusion(%a), kind=kLoop, calls=%fused_computation.4
  ROOT %wrapped_broadcast = f32[8,2]{1,0} fusion(%c), kind=kLoop, calls=%fused_computation.5
}
"""


def write_trace(path, events):
  with gzip.open(path, "wt") as f:
    json.dump({"traceEvents": [{"ph": "X", "name": n, "dur": d} for n, d in events]}, f)


def test_hand_written_trace_and_hlo(tmp_path):
  trace = tmp_path / "t.trace.json.gz"
  # Two runs; durations in microseconds. Executor events are not operations and are skipped.
  write_trace(trace, [("ynn_fusion.1", 3000), ("ynn_fusion.1", 5000), ("ynn_fusion.2", 1000), ("ynn_fusion.2", 1000),
                      ("copy_bitcast_fusion.3", 2000), ("dynamic-slice_bitcast_fusion", 600),
                      ("wrapped_broadcast", 400), ("ThunkExecutor::Execute", 99000), ("$api.py:1 f", 99000),
                      ("while.3", 99000)])
  rows = profile_ops.op_times(str(trace), HLO, runs=2)
  got = {r.name: (r.kind, r.ms_per_run, r.calls_per_run, r.shape, r.scope) for r in rows}
  assert got == {
      "ynn_fusion.1": ("matmul", 4.0, 1.0, "f32[8,2]{1,0}", "mlp/up_proj/dot_general"),
      "ynn_fusion.2": ("elementwise/reduce", 1.0, 1.0, "f32[8]{0}", "model/norm/reduce_sum"),
      "copy_bitcast_fusion.3": ("copy/transpose", 1.0, 0.5, "f32[4,8]{1,0}", ""),
      "dynamic-slice_bitcast_fusion": ("dynamic slice/update", 0.3, 0.5, "f32[4]{0}", ""),
      "wrapped_broadcast": ("broadcast", 0.2, 0.5, "f32[8,2]{1,0}", ""),
  }
  assert [r.name for r in rows][0] == "ynn_fusion.1"  # most expensive first
  table = profile_ops.format_table(rows)
  # 6.5 ms per run in all: matmul 4.0 (61.5%), the rest 1.0 / 1.0 / 0.3 / 0.2.
  assert "matmul                      4.0   61.5%" in table
  assert "broadcast                   0.2    3.1%" in table


def test_a_real_trace_holds_the_matmul(tmp_path):
  a = jnp.ones((256, 256))
  f = jax.jit(lambda x: jnp.tanh(x @ x))
  jax.block_until_ready(f(a))
  trace = profile_ops.trace_runs(lambda: f(a), runs=2, directory=str(tmp_path))
  rows = profile_ops.op_times(trace, f.lower(a).compile().as_text(), runs=2)
  kinds = {r.kind for r in rows}
  assert "matmul" in kinds, rows
  assert all(r.ms_per_run > 0 for r in rows)


def test_no_trace_is_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.setattr(jax.profiler, "trace", lambda *a, **k: contextlib.nullcontext())
  with pytest.raises(FileNotFoundError, match="no perfetto trace"):
    profile_ops.trace_runs(lambda: 0, runs=1, directory=str(tmp_path))
