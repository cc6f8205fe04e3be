"""The local launcher with real processes: a cross-process collective, a failing start, SIGTERM."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from steptool_jax import launch_local
from steptool_jax.launch_local import LaunchOptions, UsageError, parse_arguments, process_environment

LAUNCHER = [sys.executable, "-m", "steptool_jax.launch_local"]
HANG_GUARD_S = 120  # generous: a launcher that fails to stop its processes hangs here instead of passing


def _script(tmp_path: pathlib.Path, body: str) -> str:
  path = tmp_path / "worker.py"
  path.write_text(textwrap.dedent(body))
  return str(path)


def _alive(pid: int) -> bool:
  """Running, not a zombie (a killed process whose parent is gone may wait unreaped in a container)."""
  try:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
  except FileNotFoundError:
    return False
  return fields[0] != "Z"


def _wait_for(paths: list[pathlib.Path], process: subprocess.Popen) -> None:
  deadline = time.monotonic() + HANG_GUARD_S
  while not all(path.exists() for path in paths):
    assert process.poll() is None, process.communicate()
    assert time.monotonic() < deadline, "the workers never got ready"
    time.sleep(0.05)


def test_two_processes_share_one_runtime_and_run_collectives(tmp_path):
  script = _script(tmp_path, """
      import jax, jax.numpy as jnp, numpy as np, sys
      from jax.experimental import multihost_utils
      from jax.sharding import Mesh, NamedSharding, PartitionSpec
      from steptool_jax.trainer.distributed import maybe_initialize

      assert maybe_initialize("auto")
      say = lambda text: sys.stdout.write(text + "\\n")  # one write: Gloo writes to the same stdout
      say(f"processes {jax.process_count()} devices {jax.device_count()} local {jax.local_device_count()}")
      me = jax.process_index()
      gathered = multihost_utils.process_allgather(np.array([10 * me + 1], np.int32))
      say(f"allgather {np.asarray(gathered).ravel().tolist()}")
      # Each process holds two rows of a global [4] array: 2 * me + 1, 2 * me + 2.
      sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec("data"))
      rows = jax.make_array_from_process_local_data(sharding, np.array([2 * me + 1, 2 * me + 2], np.int32))
      total = jax.jit(jnp.sum, out_shardings=NamedSharding(sharding.mesh, PartitionSpec()))(rows)
      say(f"sum {int(total)}")
      print("to stderr", file=sys.stderr)
      """)
  done = subprocess.run(LAUNCHER + ["--processes=2", "--devices_per_process=2", "--", sys.executable, script],
                        capture_output=True, text=True, timeout=HANG_GUARD_S)
  assert done.returncode == 0, done.stderr
  for p in ("[p0] ", "[p1] "):
    # Gloo's C++ connection messages go to the same stdout in pieces, from other threads: a
    # piece of theirs can land on a line of the script's.
    lines = [line for line in done.stdout.splitlines() if line.startswith(p)]
    assert any("processes 2 devices 4 local 2" in line for line in lines), lines
    assert any("allgather [1, 11]" in line for line in lines), lines  # process 0 gives 1, process 1 gives 11
    assert any("sum 10" in line for line in lines), lines  # 1 + 2 + 3 + 4 across both processes' devices
    assert f"{p}to stderr" in done.stderr.splitlines()
  assert all(line.startswith(("[p0] ", "[p1] ")) for line in done.stdout.splitlines())
  assert "all succeeded (p0 exit 0, p1 exit 0)" in done.stderr.splitlines()[-1]


def test_a_process_failing_at_start_stops_the_others_and_their_children(tmp_path):
  # Process 0 starts a child of its own, then waits in jax.distributed.initialize for a peer that
  # never comes (300 s by JAX's default); process 1 fails once process 0 is in place.
  script = _script(tmp_path, f"""
      import os, pathlib, subprocess, sys, time
      out = pathlib.Path({str(tmp_path)!r})
      if os.environ["JAX_PROCESS_ID"] == "0":
        from steptool_jax.trainer.distributed import maybe_initialize
        import jax
        grandchild = subprocess.Popen(["sleep", "600"])
        (out / "pids.tmp").write_text(f"{{os.getpid()}} {{grandchild.pid}}")
        (out / "pids.tmp").rename(out / "pids")
        maybe_initialize("auto")
        time.sleep(600)
      while not (out / "pids").exists():
        time.sleep(0.05)
      raise RuntimeError("worker 1 cannot start")
      """)
  done = subprocess.run(LAUNCHER + ["--processes=2", "--", sys.executable, script], capture_output=True, text=True,
                        timeout=HANG_GUARD_S)
  assert done.returncode == 1, done.stderr  # Python's status for an uncaught exception, passed through
  assert "[p1] RuntimeError: worker 1 cannot start" in done.stderr.splitlines()
  assert "p1 failed first (p0 killed, p1 exit 1)" in done.stderr.splitlines()[-1]
  pids = [int(pid) for pid in (tmp_path / "pids").read_text().split()]
  assert [pid for pid in pids if _alive(pid)] == []


def test_a_process_failing_after_initialize_ends_the_run_at_once(tmp_path):
  # Process 0 is busy (a long step, its share of an evaluation). Without distributed's
  # exit-at-once hook, process 1 would wait for it in jax.distributed's shutdown barrier for
  # 5 minutes before dying, and the hang guard would trip.
  script = _script(tmp_path, """
      import time
      import jax
      from steptool_jax.trainer.distributed import maybe_initialize

      maybe_initialize("auto")
      if jax.process_index() == 1:
        raise RuntimeError("worker 1 fails after initialize")
      time.sleep(600)
      """)
  done = subprocess.run(LAUNCHER + ["--processes=2", "--", sys.executable, script], capture_output=True, text=True,
                        timeout=HANG_GUARD_S)
  assert done.returncode == 1, done.stderr
  assert "[p1] RuntimeError: worker 1 fails after initialize" in done.stderr.splitlines()
  assert "p1 failed first (p0 killed, p1 exit 1)" in done.stderr.splitlines()[-1]


def test_sigterm_to_the_launcher_reaches_every_process(tmp_path):
  script = _script(tmp_path, f"""
      import os, pathlib, signal, sys, time
      me = os.environ["JAX_PROCESS_ID"]
      def stop(signum, frame):
        print(f"process {{me}} got signal {{signum}}, saving", flush=True)
        sys.exit(0)
      signal.signal(signal.SIGTERM, stop)
      pathlib.Path({str(tmp_path)!r}, f"ready{{me}}").touch()
      time.sleep(600)
      """)
  launcher = subprocess.Popen(LAUNCHER + ["--processes=2", "--", sys.executable, script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
  _wait_for([tmp_path / "ready0", tmp_path / "ready1"], launcher)
  launcher.send_signal(signal.SIGTERM)
  stdout, stderr = launcher.communicate(timeout=HANG_GUARD_S)
  assert launcher.returncode == 0, stderr  # both processes exited 0 from their handler
  for me in ("0", "1"):
    assert f"[p{me}] process {me} got signal {int(signal.SIGTERM)}, saving" in stdout.splitlines()


def test_parse_arguments_splits_at_the_double_dash():
  assert parse_arguments(["--processes=2", "--devices_per_process=4", "--", "python", "-m", "x", "--flag=1"]) == (
      LaunchOptions(processes=2, devices_per_process=4, port=0, command=("python", "-m", "x", "--flag=1")))


@pytest.mark.parametrize("argv, message", [
    (["--processes=2", "python"], "expected `-- COMMAND ...`"),
    (["--processes=2", "--"], "expected a command"),
    (["--", "python"], "--processes is required"),
    (["--processes=0", "--", "python"], "--processes: expected a positive integer, found 0"),
    (["--processes=two", "--", "python"], "--processes: expected a positive integer, found 'two'"),
    (["--procs=2", "--", "python"], "unknown option '--procs=2'"),
    (["--processes=2", "--port=99999", "--", "python"], "--port: expected 0"),
])
def test_parse_arguments_names_the_bad_option(argv, message):
  with pytest.raises(UsageError, match=re.escape(message)):
    parse_arguments(argv)


def test_usage_errors_exit_2_without_starting_anything(capsys):
  assert launch_local.main(["--processes=2", "--"]) == 2
  assert "error: expected a command after `--`" in capsys.readouterr().err


def test_a_command_that_cannot_start_exits_127(capsys):
  assert launch_local.main(["--processes=2", "--", "/nonexistent/steptool-command"]) == 127
  assert "could not start '/nonexistent/steptool-command'" in capsys.readouterr().err


def test_process_environment_sets_the_variables_jax_and_the_trainer_read():
  env = process_environment({"HOME": "/h", "JAX_PLATFORMS": "tpu", "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "mpi"},
                            process_id=1, num_processes=3, devices_per_process=4, coordinator="127.0.0.1:1234")
  assert env == {"HOME": "/h", "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "4", "PYTHONUNBUFFERED": "1",
                 "JAX_COORDINATOR_ADDRESS": "127.0.0.1:1234", "JAX_NUM_PROCESSES": "3", "JAX_PROCESS_ID": "1",
                 "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "mpi"}  # a user's choice of collectives is kept


def test_exit_status_reports_signals_as_a_shell_does():
  assert [launch_local.exit_status(code) for code in (0, 3, -signal.SIGKILL)] == [0, 3, 128 + 9]


def test_free_port_can_be_bound():
  import socket  # noqa: PLC0415

  with socket.socket() as s:
    s.bind(("127.0.0.1", launch_local.free_port()))


def test_the_launcher_does_not_load_jax():
  # It starts in a fraction of a second and never holds a backend the processes need.
  code = "import sys, steptool_jax.launch_local; print('jax' in sys.modules)"
  assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        env={**os.environ}).stdout.strip() == "False"
