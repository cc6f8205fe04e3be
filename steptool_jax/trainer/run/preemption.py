"""SIGTERM (TPU/Slurm preemption) as a flag the training loop polls between steps.

The handler only records the signal; the loop finishes the step in flight, saves a
checkpoint and returns normally, so the process exits 0 and the next start resumes. With
several processes every one must stop at the same step (a checkpoint save is collective),
so the flag is combined over processes (any process signalled = all stop).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

import jax
import numpy as np


class PreemptionFlag:
  """Set by SIGTERM; `requested()` is the decision all processes agree on."""

  def __init__(self):
    self._event = threading.Event()

  def set(self, *_: object) -> None:
    self._event.set()

  def local(self) -> bool:
    return self._event.is_set()

  def requested(self) -> bool:
    if jax.process_count() == 1:
      return self.local()
    from jax.experimental import multihost_utils  # noqa: PLC0415
    return bool(np.any(multihost_utils.process_allgather(np.int32(self.local()))))


@contextlib.contextmanager
def sigterm_flag(signals: tuple[int, ...] = (signal.SIGTERM,)) -> Iterator[PreemptionFlag]:
  """Installs the handler for the duration of a run (main thread only) and restores the old one."""
  flag = PreemptionFlag()
  if threading.current_thread() is not threading.main_thread():
    yield flag  # signal handlers can only be installed from the main thread
    return
  previous = {sig: signal.signal(sig, flag.set) for sig in signals}
  try:
    yield flag
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
