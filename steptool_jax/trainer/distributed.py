"""`jax.distributed.initialize()` for multi-process runs (TPU pod slices, multi-node GPU).

It must run before anything touches a JAX backend. With `distributed="auto"` it runs when
the environment describes more than one process: a coordinator address set explicitly,
Slurm with several tasks, Open MPI with several ranks, or a multi-host Cloud TPU slice.
JAX then reads the cluster's own variables for the rest (process id, count, coordinator).
"""

from __future__ import annotations

import os
from typing import Mapping

import jax
from absl import logging


def looks_multi_process(environ: Mapping[str, str] = os.environ) -> bool:
  if environ.get("JAX_COORDINATOR_ADDRESS"):
    return True
  for count_var in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    if int(environ.get(count_var, "1") or "1") > 1:
      return True
  return "," in environ.get("TPU_WORKER_HOSTNAMES", "")


def maybe_initialize(mode: str, environ: Mapping[str, str] = os.environ) -> bool:
  """Initialises the distributed runtime for `mode` = on | off | auto; True when it did."""
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"distributed: expected auto, on or off, found {mode!r}")
  if mode == "off" or (mode == "auto" and not looks_multi_process(environ)):
    return False
  jax.distributed.initialize()
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True
