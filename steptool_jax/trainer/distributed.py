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

Once the runtime is up, a few process-level helpers keep the processes in step outside
the jitted programs: `main_process_first` (process 0 builds a cache in a shared directory,
the others wait and read it), `allgather_json` (every process's records, e.g. an
evaluation's episodes, in every process) and `fail` (a failing command ends its process at
once instead of waiting for the others at exit).
"""

from __future__ import annotations

import json
import os
import sys
import types
from typing import Any, Callable, Mapping, NoReturn, Sequence, TypeVar

from absl import logging

COORDINATOR_VAR = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES_VAR = "JAX_NUM_PROCESSES"
PROCESS_ID_VAR = "JAX_PROCESS_ID"

T = TypeVar("T")
BUILD_TIMEOUT_S = 3600  # how long the other processes wait for process 0 to build a cache
_barriers = 0  # main_process_first barriers passed by this process


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
    exit_now(1)

  sys.excepthook = print_and_exit


def exit_now(status: int) -> NoReturn:
  """Flushes the logs and standard streams, then ends the process with `status`, skipping the
  interpreter's exit (and with it `jax.distributed.shutdown()`'s barrier)."""
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status)


def fail(status: int) -> int:
  """A command's failing exit `status`: returned as it is in a single-process run; in a
  multi-process run the process ends here, at once (`exit_now`).

  A bad data file or config value may stop only some processes (process 0 alone reads what
  it alone builds); exiting normally would hold each of them for 5 minutes in the shutdown
  barrier, waiting for peers that in turn wait for them in their next collective.
  """
  if "jax" in sys.modules and sys.modules["jax"].distributed.is_initialized():
    exit_now(status)
  return status


def maybe_initialize(mode: str, environ: Mapping[str, str] = os.environ) -> bool:
  """Initialises the distributed runtime for `mode` = on | off | auto; True when it did."""
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"distributed: expected auto, on or off, found {mode!r}")
  if mode == "off" or (mode == "auto" and not looks_multi_process(environ)):
    return False
  import jax  # noqa: PLC0415 (here, so the launcher can read this module's names without loading jax)

  jax.distributed.initialize(**(explicit_arguments(environ) or {}))
  exit_at_once_on_uncaught_exceptions()
  if jax.default_backend() == "cpu" and jax.process_count() > 1:
    connect_cpu_collectives()
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def connect_cpu_collectives() -> None:
  """Collectives over the groups of devices later steps use, so that their gloo communicators
  are set up now, while the processes are in step.

  On CPU a process must join a new communicator within 30 s of the first process that uses
  it, or that one fails ("Gloo context initialization failed: DEADLINE_EXCEEDED"); a run's
  first collectives come with its first step, whose compilation may end tens of seconds
  apart in different processes of a loaded machine. Right after `initialize` they are in
  step. Every later collective over the same group reuses its communicator; the groups
  set up here are all devices (a data-parallel mesh's gradient sum) and one device per
  process (`multihost_utils.process_allgather`: the SIGTERM flag, `allgather_json`).
  """
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415
  from jax.experimental import multihost_utils  # noqa: PLC0415
  from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: PLC0415

  mesh = Mesh(np.array(jax.devices()), ("devices",))
  ones = jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec("devices")),
                                                np.ones(jax.local_device_count(), np.int32))
  total = int(jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, PartitionSpec()))(ones))
  ids = np.asarray(multihost_utils.process_allgather(np.int32(jax.process_index()))).reshape(-1).tolist()
  if total != jax.device_count() or ids != list(range(jax.process_count())):
    raise RuntimeError(f"collectives over the {jax.process_count()} processes gave a device count of {total} and"
                       f" process ids {ids}")


def main_process_first(name: str, make: Callable[[], T], *, timeout_s: int = BUILD_TIMEOUT_S) -> T:
  """`make()` on process 0, then, after a barrier, on the other processes.

  For a cache under a directory every process reads (the generated environment data, the
  tokenised dataset): process 0 builds it, the others wait and then find it complete, so no
  two processes write the same files. Where the directory is local to each host, every
  host builds its own copy after process 0 is done: as correct, only slower.

  The barrier is the coordination service's (Orbax's `get_barrier_sync_fn`), not a device
  collective: on CPU the first gloo collective gives up after 30 s, and process 0 may take
  minutes to tokenise a large file. It waits up to `timeout_s`. If `make` fails on process 0,
  that process ends (`fail`), the coordination service it hosts goes with it, and the others
  stop at once with "the JAX distributed service detected fatal errors".
  """
  import jax  # noqa: PLC0415

  if jax.process_count() == 1:
    return make()
  from orbax.checkpoint import multihost  # noqa: PLC0415

  global _barriers
  _barriers += 1  # every process passes the same barriers in the same order, so the keys agree
  key = f"steptool_jax/{name}/{_barriers}"
  wait = multihost.get_barrier_sync_fn()
  if jax.process_index() == 0:
    value = make()
    wait(key=key, timeout_ms=timeout_s * 1000)
    return value
  logging.info("waiting for process 0 to build the %s", name)
  wait(key=key, timeout_ms=timeout_s * 1000)
  return make()


def allgather_json(records: Sequence[Any]) -> list[list[Any]]:
  """Every process's `records` (JSON values), in every process: `result[p]` is process p's list.

  `process_allgather` moves arrays of one shape, so the records travel as UTF-8 JSON bytes:
  first each process's byte count, then the bytes zero-padded to the longest.
  """
  import jax  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  encoded = json.dumps(list(records)).encode("utf-8")  # key order kept: it is written out as it came
  if jax.process_count() == 1:
    return [json.loads(encoded)]
  from jax.experimental import multihost_utils  # noqa: PLC0415

  lengths = np.asarray(multihost_utils.process_allgather(np.int64(len(encoded)))).reshape(-1)
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[:len(encoded)] = np.frombuffer(encoded, np.uint8)
  gathered = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(lengths), -1)
  return [json.loads(gathered[p, :int(n)].tobytes().decode("utf-8")) for p, n in enumerate(lengths)]


def global_max(value: int) -> int:
  """The largest of every process's `value` (one process: `value`)."""
  import jax  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  if jax.process_count() == 1:
    return int(value)
  from jax.experimental import multihost_utils  # noqa: PLC0415
  return int(np.asarray(multihost_utils.process_allgather(np.int64(value))).max())


def process_local_copy(tree: Any) -> tuple[Any, Any]:
  """`(copy, mesh)`: the arrays of `tree` whole on this process's first device, and the
  one-device mesh to run on them; `(tree, None)` when every array is this process's already
  (one process).

  For work each process does on its own between collectives (an online batch's rollouts:
  each process plays its rows, episodes of different lengths, generate calls of different
  counts), which a global array cannot take part in. Every process must call it (a sharded
  array is all-gathered); each then holds a full copy of the tree on one device.
  """
  import jax  # noqa: PLC0415

  leaves = jax.tree.leaves(tree)
  if all(not isinstance(x, jax.Array) or x.is_fully_addressable for x in leaves):
    return tree, None
  from jax.experimental import multihost_utils  # noqa: PLC0415
  from steptool_jax.parallel import make_mesh  # noqa: PLC0415

  device = jax.local_devices()[0]
  copy = jax.tree.map(lambda x: jax.device_put(multihost_utils.process_allgather(x, tiled=True), device)
                      if isinstance(x, jax.Array) else x, tree)
  return copy, make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, [device])
