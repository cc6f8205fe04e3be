r"""`python -m steptool_jax.launch_local`: several JAX processes on this machine, as on a pod.

    python -m steptool_jax.launch_local --processes=2 --devices_per_process=4 -- \
        python -m steptool_jax.train --config=configs/tiny.py --workdir=/tmp/steptool-2x4

Starts `--processes` copies of the command, each with `--devices_per_process` CPU devices
(`JAX_PLATFORMS=cpu`, `JAX_NUM_CPU_DEVICES`; the cross-process collectives run over gloo),
a free coordinator port on 127.0.0.1 (`JAX_COORDINATOR_ADDRESS`), and its place in the job
(`JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`), which `steptool_jax.trainer.distributed` hands to
`jax.distributed.initialize()`. So a pod configuration (2 hosts x 4 chips) runs on a laptop
as 2 processes x 4 CPU devices, through the same multi-controller code paths.

Every line a process prints comes out prefixed with `[pN] ` (stdout to stdout, stderr to
stderr). The launcher exits 0 when every process exits 0; when one fails, the others are
killed at once (a peer of a dead process can only hang in its next collective) and the
launcher exits with the failing process's status (128 + N for a process killed by signal
N). SIGINT and SIGTERM are forwarded to every process (the trainer then checkpoints and
exits 0, as on a preempted VM); a second one kills them. Each process runs in its own
process group, killed whole, so nothing it started outlives the launcher.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Callable, Mapping, Sequence

from steptool_jax.trainer.distributed import COORDINATOR_VAR, NUM_PROCESSES_VAR, PROCESS_ID_VAR

EXIT_USAGE = 2
POLL_SECONDS = 0.02
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
USAGE = ("usage: python -m steptool_jax.launch_local --processes=N [--devices_per_process=K] [--port=P] "
         "-- COMMAND [ARG ...]")


class UsageError(ValueError):
  pass


@dataclasses.dataclass(frozen=True)
class LaunchOptions:
  processes: int
  devices_per_process: int = 1
  port: int = 0  # 0: a free one
  command: tuple[str, ...] = ()


def _positive_int(name: str, text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise UsageError(f"--{name}: expected a positive integer, found {text!r}") from None
  if value < 1:
    raise UsageError(f"--{name}: expected a positive integer, found {value}")
  return value


def parse_arguments(argv: Sequence[str]) -> LaunchOptions:
  """The launcher's own options before `--`, the command after it (taken verbatim)."""
  argv = list(argv)
  if "--" not in argv:
    raise UsageError("expected `-- COMMAND ...` after the launcher's options")
  split = argv.index("--")
  own, command = argv[:split], tuple(argv[split + 1:])
  if not command:
    raise UsageError("expected a command after `--`")
  values = {"processes": None, "devices_per_process": "1", "port": "0"}
  for arg in own:
    name, sep, text = arg.removeprefix("--").partition("=")
    if not arg.startswith("--") or not sep or name not in values:
      raise UsageError(f"unknown option {arg!r}; expected --processes=N, --devices_per_process=K or --port=P")
    values[name] = text
  if values["processes"] is None:
    raise UsageError("--processes is required")
  port = int(values["port"]) if values["port"].isdigit() else -1
  if not 0 <= port < 65536:
    raise UsageError(f"--port: expected 0 (a free port) or a port number, found {values['port']!r}")
  return LaunchOptions(processes=_positive_int("processes", values["processes"]),
                       devices_per_process=_positive_int("devices_per_process", values["devices_per_process"]),
                       port=port, command=command)


def free_port(host: str = "127.0.0.1") -> int:
  """A port nobody listens on now (the coordinator binds it a moment later; a race we accept)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
    probe.bind((host, 0))
    return probe.getsockname()[1]


def process_environment(base: Mapping[str, str], *, process_id: int, num_processes: int, devices_per_process: int,
                        coordinator: str) -> dict[str, str]:
  env = dict(base)
  env.update({
      "JAX_PLATFORMS": "cpu",
      "JAX_NUM_CPU_DEVICES": str(devices_per_process),
      COORDINATOR_VAR: coordinator,
      NUM_PROCESSES_VAR: str(num_processes),
      PROCESS_ID_VAR: str(process_id),
      "PYTHONUNBUFFERED": "1",  # lines arrive as they are printed, not at exit
  })
  env.setdefault("JAX_CPU_COLLECTIVES_IMPLEMENTATION", "gloo")
  return env


def exit_status(returncode: int) -> int:
  """A child's status as a shell reports it: 128 + N when killed by signal N."""
  return returncode if returncode >= 0 else 128 - returncode


def _die_with_parent_hook() -> Callable[[], None] | None:
  """A `preexec_fn` (run in the child before exec): when the launcher itself dies, even by SIGKILL,
  the kernel kills the child (Linux's PR_SET_PDEATHSIG; elsewhere None). `prctl` is looked up here,
  in the parent, so the child between fork and exec only makes the call."""
  if not sys.platform.startswith("linux"):
    return None
  prctl = ctypes.CDLL(None, use_errno=True).prctl
  pr_set_pdeathsig = 1
  return lambda: prctl(pr_set_pdeathsig, signal.SIGKILL)


def _kill_group(process: subprocess.Popen, sig: int) -> None:
  try:
    os.killpg(process.pid, sig)  # the child leads its own session, so its group id is its pid
  except (ProcessLookupError, PermissionError):
    pass


def _stream(pipe: IO[bytes], prefix: str, out: IO[str], lock: threading.Lock) -> None:
  for raw in iter(pipe.readline, b""):
    line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    with lock:
      out.write(f"{prefix}{line}\n")
      out.flush()
  pipe.close()


class Launch:
  """The running processes: start them, forward signals, watch for the first failure, clean up."""

  def __init__(self, options: LaunchOptions, out: IO[str], err: IO[str]):
    self.options, self.out, self.err = options, out, err
    self.processes: list[subprocess.Popen] = []
    self.threads: list[threading.Thread] = []
    self.first_signal: int | None = None
    self.killed_after_failure: set[int] = set()

  def note(self, text: str) -> None:
    self.err.write(f"launch_local: {text}\n")
    self.err.flush()

  def start(self, environ: Mapping[str, str]) -> None:
    port = self.options.port or free_port()
    coordinator = f"127.0.0.1:{port}"
    die_with_parent = _die_with_parent_hook()
    for process_id in range(self.options.processes):
      env = process_environment(environ, process_id=process_id, num_processes=self.options.processes,
                                devices_per_process=self.options.devices_per_process, coordinator=coordinator)
      self.processes.append(subprocess.Popen(self.options.command, env=env, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                             preexec_fn=die_with_parent))
    if self.first_signal is not None:  # it arrived while the processes were starting: some missed it
      self.forward(self.first_signal)
    # Threads only after every fork: preexec_fn is not safe while other threads run.
    lock = threading.Lock()
    for process_id, process in enumerate(self.processes):
      for pipe, out in ((process.stdout, self.out), (process.stderr, self.err)):
        thread = threading.Thread(target=_stream, args=(pipe, f"[p{process_id}] ", out, lock), daemon=True)
        thread.start()
        self.threads.append(thread)

  def forward(self, sig: int) -> None:
    for process in self.processes:
      if process.poll() is None:
        _kill_group(process, sig)

  def on_signal(self, signum: int, frame: object) -> None:
    del frame
    if self.first_signal is None:
      self.first_signal = signum
      self.forward(signum)
    else:  # a second SIGINT/SIGTERM: stop waiting for a clean exit
      self.forward(signal.SIGKILL)

  def wait(self) -> tuple[int | None, list[int]]:
    """(index of the first process that failed or None, every process's return code)."""
    first_failure = None
    while True:
      codes = [process.poll() for process in self.processes]
      if first_failure is None:
        first_failure = next((i for i, code in enumerate(codes) if code not in (None, 0)), None)
        if first_failure is not None:
          for i, process in enumerate(self.processes):
            if codes[i] is None:
              self.killed_after_failure.add(i)
              _kill_group(process, signal.SIGKILL)
      if all(code is not None for code in codes):
        return first_failure, codes
      time.sleep(POLL_SECONDS)

  def clean_up(self) -> None:
    """Kills whatever is left in the processes' groups (their own children) and drains the output."""
    for process in self.processes:
      if process.poll() is None:
        _kill_group(process, signal.SIGKILL)
        process.wait()
      _kill_group(process, signal.SIGKILL)
    for thread in self.threads:
      thread.join(timeout=5.0)

  def summary(self, first_failure: int | None, codes: Sequence[int], seconds: float) -> str:
    parts = []
    for i, code in enumerate(codes):
      if i in self.killed_after_failure:
        parts.append(f"p{i} killed")
      elif code < 0:
        parts.append(f"p{i} signal {-code}")
      else:
        parts.append(f"p{i} exit {code}")
    shape = f"{len(codes)} processes x {self.options.devices_per_process} CPU devices"
    verdict = "all succeeded" if first_failure is None else f"p{first_failure} failed first"
    return f"{shape}, {seconds:.1f} s: {verdict} ({', '.join(parts)})"


def launch(options: LaunchOptions, *, environ: Mapping[str, str] | None = None, out: IO[str] | None = None,
           err: IO[str] | None = None, handle_signals: bool = True) -> int:
  """Runs the processes to the end; the launcher's exit status. Defaults: this process's environment and streams."""
  started = time.monotonic()
  environ = os.environ if environ is None else environ
  job = Launch(options, out or sys.stdout, err or sys.stderr)
  previous = {}
  if handle_signals:
    previous = {sig: signal.signal(sig, job.on_signal) for sig in FORWARDED_SIGNALS}
  try:
    try:
      job.start(environ)
    except OSError as e:
      job.note(f"could not start {options.command[0]!r}: {e}")
      return 127
    first_failure, codes = job.wait()
  finally:
    job.clean_up()
    for sig, handler in previous.items():
      signal.signal(sig, handler)
  job.note(job.summary(first_failure, codes, time.monotonic() - started))
  return 0 if first_failure is None else exit_status(codes[first_failure])


def main(argv: Sequence[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if any(arg in ("-h", "--help") for arg in argv[:argv.index("--") if "--" in argv else len(argv)]):
    print(__doc__.strip() + "\n\n" + USAGE)
    return 0
  try:
    options = parse_arguments(argv)
  except UsageError as e:
    print(f"error: {e}\n{USAGE}", file=sys.stderr)
    return EXIT_USAGE
  return launch(options)


if __name__ == "__main__":
  sys.exit(main())
