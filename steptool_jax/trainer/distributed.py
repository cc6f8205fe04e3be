"""`jax.distributed.initialize()` for multi-process runs (TPU pod slices, multi-node GPU, local CPU processes).

It must run before anything touches a JAX backend. With `distributed="auto"` it runs when
the environment describes more than one process: the local launcher's variables, a
coordinator address set explicitly, Slurm with several tasks, Open MPI with several ranks,
or a multi-host Cloud TPU slice.

JAX itself reads only `JAX_COORDINATOR_ADDRESS` from the environment; the process count and
id come from the cluster (Slurm, Open MPI, TPU metadata). A plain set of processes has no
cluster, so `python -m steptool_jax.launch_local` also sets `JAX_NUM_PROCESSES` and
`JAX_PROCESS_ID`, and this module passes all three to JAX explicitly (cluster detection off,
so a launcher started inside a Slurm job is not mistaken for that job's tasks). The same
three variables start a run under any other scheduler.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Mapping

from absl import logging

COORDINATOR_VAR = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES_VAR = "JAX_NUM_PROCESSES"
PROCESS_ID_VAR = "JAX_PROCESS_ID"


def _int_var(environ: Mapping[str, str], name: str) -> int:
  text = environ[name]
  try:
    return int(text)
  except ValueError:
    raise ValueError(f"environment variable {name}: expected an integer, found {text!r}") from None


def explicit_arguments(environ: Mapping[str, str] = os.environ) -> dict[str, object] | None:
  """`jax.distributed.initialize` keyword arguments from the launcher's variables; None when they are not set."""
  if NUM_PROCESSES_VAR not in environ and PROCESS_ID_VAR not in environ:
    return None
  missing = [name for name in (COORDINATOR_VAR, NUM_PROCESSES_VAR, PROCESS_ID_VAR) if not environ.get(name)]
  if missing:
    raise ValueError(f"environment variables {', '.join(missing)}: not set, but {NUM_PROCESSES_VAR}/{PROCESS_ID_VAR} "
                     f"are; a launcher must set {COORDINATOR_VAR}, {NUM_PROCESSES_VAR} and {PROCESS_ID_VAR} together")
  num_processes, process_id = _int_var(environ, NUM_PROCESSES_VAR), _int_var(environ, PROCESS_ID_VAR)
  if num_processes < 1 or not 0 <= process_id < num_processes:
    raise ValueError(f"environment variables {NUM_PROCESSES_VAR}={num_processes}, {PROCESS_ID_VAR}={process_id}: "
                     f"expected a count >= 1 and an id in [0, count)")
  return {"coordinator_address": environ[COORDINATOR_VAR], "num_processes": num_processes, "process_id": process_id,
          "cluster_detection_method": "deactivate"}


def looks_multi_process(environ: Mapping[str, str] = os.environ) -> bool:
  if NUM_PROCESSES_VAR in environ:  # the launcher says how many; one needs no runtime
    return _int_var(environ, NUM_PROCESSES_VAR) > 1
  if environ.get(COORDINATOR_VAR):
    return True
  for count_var in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    if int(environ.get(count_var, "1") or "1") > 1:
      return True
  return "," in environ.get("TPU_WORKER_HOSTNAMES", "")


def exit_at_once_on_uncaught_exceptions() -> None:
  """After the traceback is printed, end the process without the interpreter's normal exit.

  That exit runs `jax.distributed.shutdown()`, which waits up to 5 minutes in a barrier for
  the other processes; they in turn wait for this one in their next collective. So one
  process's error would hang the whole job for minutes, and the launcher (or the scheduler)
  would learn of it only then. Exiting at once lets the launcher stop the others within a
  second; on a pod, JAX's coordination service ends them when the heartbeat stops.
  """
  previous = sys.excepthook

  def print_and_exit(kind: type[BaseException], error: BaseException, trace: types.TracebackType | None) -> None:
    previous(kind, error, trace)
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)

  sys.excepthook = print_and_exit


def maybe_initialize(mode: str, environ: Mapping[str, str] = os.environ) -> bool:
  """Initialises the distributed runtime for `mode` = on | off | auto; True when it did."""
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"distributed: expected auto, on or off, found {mode!r}")
  if mode == "off" or (mode == "auto" and not looks_multi_process(environ)):
    return False
  import jax  # noqa: PLC0415 (here, so the launcher can read this module's names without loading jax)

  jax.distributed.initialize(**(explicit_arguments(environ) or {}))
  exit_at_once_on_uncaught_exceptions()
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True
