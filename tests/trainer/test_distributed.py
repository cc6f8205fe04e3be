"""When and how `jax.distributed.initialize` is called (stubbed; the launcher tests run it), and the
process-level helpers, in one process and in two real ones."""

from __future__ import annotations

import os
import sys
import textwrap
import time

import jax
import pytest

from steptool_jax.trainer import distributed
from tests import local_launch

LAUNCHED = {"JAX_COORDINATOR_ADDRESS": "127.0.0.1:4321", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}


@pytest.fixture
def initialize_calls(monkeypatch):
  monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # maybe_initialize replaces it; restored after the test
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
  return calls


@pytest.mark.parametrize("environ, expected", [
    ({}, False),
    (LAUNCHED, True),
    ({**LAUNCHED, "JAX_NUM_PROCESSES": "1", "JAX_PROCESS_ID": "0"}, False),  # one process needs no runtime
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, True),
    ({"SLURM_NTASKS": "4"}, True),
    ({"SLURM_NTASKS": "1"}, False),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, True),
    ({"TPU_WORKER_HOSTNAMES": "a,b"}, True),
    ({"TPU_WORKER_HOSTNAMES": "a"}, False),
    ({"SLURM_NTASKS": "4", "JAX_NUM_PROCESSES": "1", "JAX_PROCESS_ID": "0",
      "JAX_COORDINATOR_ADDRESS": "127.0.0.1:1"}, False),  # the launcher's count wins inside a Slurm job
])
def test_looks_multi_process(environ, expected):
  assert distributed.looks_multi_process(environ) is expected


def test_launcher_variables_are_passed_explicitly_with_cluster_detection_off(initialize_calls):
  assert distributed.maybe_initialize("auto", {**LAUNCHED, "SLURM_NTASKS": "8"}) is True
  assert initialize_calls == [{"coordinator_address": "127.0.0.1:4321", "num_processes": 2, "process_id": 1,
                               "cluster_detection_method": "deactivate"}]


def test_a_cluster_without_launcher_variables_is_left_to_jax(initialize_calls):
  assert distributed.maybe_initialize("auto", {"SLURM_NTASKS": "4"}) is True
  assert initialize_calls == [{}]  # JAX reads Slurm's own variables


@pytest.mark.parametrize("mode, environ, called", [
    ("off", LAUNCHED, False),
    ("auto", {}, False),
    ("on", {}, True),
])
def test_modes(initialize_calls, mode, environ, called):
  assert distributed.maybe_initialize(mode, environ) is called
  assert bool(initialize_calls) is called


def test_unknown_mode_is_refused(initialize_calls):
  with pytest.raises(ValueError, match="distributed: expected auto, on or off, found 'yes'"):
    distributed.maybe_initialize("yes", LAUNCHED)
  assert initialize_calls == []


@pytest.mark.parametrize("environ, message", [
    ({**LAUNCHED, "JAX_PROCESS_ID": "one"}, "JAX_PROCESS_ID: expected an integer, found 'one'"),
    ({**LAUNCHED, "JAX_PROCESS_ID": "2"}, "JAX_NUM_PROCESSES=2, JAX_PROCESS_ID=2: expected a count >= 1 and an id"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "JAX_COORDINATOR_ADDRESS: not set"),
    ({"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1", "JAX_NUM_PROCESSES": "2"}, "JAX_PROCESS_ID: not set"),
])
def test_bad_launcher_variables_name_the_variable(initialize_calls, environ, message):
  with pytest.raises(ValueError, match=message):
    distributed.maybe_initialize("auto", environ)
  assert initialize_calls == []


def test_an_uncaught_exception_prints_its_traceback_then_exits_at_once(initialize_calls, monkeypatch):
  printed, exits = [], []
  monkeypatch.setattr(sys, "excepthook", lambda *info: printed.append(info[1]))
  monkeypatch.setattr(os, "_exit", exits.append)  # the real one would end the test run
  distributed.maybe_initialize("auto", LAUNCHED)
  error = RuntimeError("boom")
  sys.excepthook(RuntimeError, error, None)
  assert printed == [error] and exits == [1]


def test_no_hook_without_a_runtime(initialize_calls):
  hook = sys.excepthook
  distributed.maybe_initialize("auto", {})
  assert sys.excepthook is hook


def test_one_process_builds_and_gathers_alone():
  calls = []
  assert distributed.main_process_first("cache", lambda: calls.append("built") or "value") == "value"
  assert calls == ["built"]
  assert distributed.allgather_json([{"b": 1, "a": "é"}]) == [[{"b": 1, "a": "é"}]]
  assert distributed.fail(3) == 3  # no runtime: returned, for the caller's normal exit


def test_two_processes_build_in_order_gather_records_and_fail_at_once(tmp_path):
  """Process 0 builds slowly and process 1 reads what it built (it would find nothing if it
  had not waited); records of different sizes and key orders arrive intact; then process 1
  fails while process 0 is busy: without `fail`'s immediate exit, process 1 would wait in
  JAX's shutdown barrier for minutes and the launcher's timeout below would trip."""
  script = tmp_path / "worker.py"
  script.write_text(textwrap.dedent(f"""
      import json, pathlib, sys, time
      import jax
      from steptool_jax.trainer import distributed

      assert distributed.maybe_initialize("auto")
      me, out = jax.process_index(), pathlib.Path({str(tmp_path)!r})

      def build():
        if me == 0:
          time.sleep(2)
          (out / "cache").write_text("built by process 0")
          return "built"
        return (out / "cache").read_text()

      print("built:", distributed.main_process_first("test cache", build), flush=True)
      records = [{{"z": me, "a": "é" * (3 * me + 1)}}] * (me + 1)
      print("gathered:", json.dumps(distributed.allgather_json(records), ensure_ascii=False), flush=True)
      if me == 1:
        sys.exit(distributed.fail(3))
      time.sleep(600)
      """))
  env = local_launch.environment(tmp_path / "compile-cache")
  started = time.monotonic()
  done = local_launch.launch(2, 1, [sys.executable, str(script)], env=env, timeout=200)
  assert done.returncode == 3, done.tail()
  assert "p1 failed first (p0 killed, p1 exit 3)" in done.stderr.splitlines()[-1]
  assert "built: built" in done.lines(0) and "built: built by process 0" in done.lines(1)
  gathered = '[[{"z": 0, "a": "é"}], [{"z": 1, "a": "éééé"}, {"z": 1, "a": "éééé"}]]'
  assert done.lines(0).count(f"gathered: {gathered}") == 1 and f"gathered: {gathered}" in done.lines(1)
  assert time.monotonic() - started < 200
