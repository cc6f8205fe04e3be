"""`python -m steptool_jax.train`, with one process sending itself a signal at a given step.

    STEPTOOL_TEST_SIGNAL=KILL:1:5 python -m tests.train_with_signal --config=... --workdir=...

sends SIGKILL to process 1 as it collates the batch of step 5 (0-based; that is while step
4's update runs). A deterministic preemption (TERM) or crash (KILL) of one process of a
multi-process run, for `tests/test_train_multiprocess.py`.
"""

from __future__ import annotations

import os
import signal
import sys

import jax
from absl import app

from steptool_jax import train
from steptool_jax.cli import parse_flags
from steptool_jax.trainer.sources import offline


def signal_at(name: str, process: int, at_step: int) -> None:
  original = offline.OfflineSource.batch

  def batch(self, epoch, index, policy_variables=None):
    if jax.process_index() == process and epoch * self.steps_per_epoch + index == at_step:
      print(f"sending SIG{name} to myself at step {at_step}", flush=True)
      os.kill(os.getpid(), getattr(signal, f"SIG{name}"))
    return original(self, epoch, index, policy_variables)

  offline.OfflineSource.batch = batch


if __name__ == "__main__":
  sig, process, step = os.environ["STEPTOOL_TEST_SIGNAL"].split(":")
  signal_at(sig, int(process), int(step))
  sys.argv[0] = "steptool_jax.train"
  app.run(train.main, flags_parser=parse_flags)
