"""SIGTERM as a flag: the handler sets it, the previous handler comes back afterwards (also
when the run fails), and off the main thread nothing is installed."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from steptool_jax.trainer.run.preemption import PreemptionFlag, sigterm_flag


def wait_for(flag: PreemptionFlag, seconds: float = 5.0) -> bool:
  """Signals reach Python handlers between bytecodes of the main thread: poll a little."""
  deadline = time.monotonic() + seconds
  while not flag.local() and time.monotonic() < deadline:
    time.sleep(0.01)
  return flag.local()


@pytest.fixture
def previous_handler():
  """A handler of our own installed before, to see that it is restored (and the default after)."""
  received = []
  handler = lambda signum, frame: received.append(signum)
  old = signal.signal(signal.SIGTERM, handler)
  yield handler, received
  signal.signal(signal.SIGTERM, old)


def test_sigterm_sets_the_flag_and_the_handler_is_restored(previous_handler):
  handler, received = previous_handler
  with sigterm_flag() as flag:
    assert not flag.requested()
    os.kill(os.getpid(), signal.SIGTERM)
    assert wait_for(flag)
    assert flag.requested()
  assert signal.getsignal(signal.SIGTERM) is handler
  assert received == []  # the run's handler took it; the previous one was not called
  os.kill(os.getpid(), signal.SIGTERM)
  deadline = time.monotonic() + 5
  while not received and time.monotonic() < deadline:
    time.sleep(0.01)
  assert received == [signal.SIGTERM]


def test_the_handler_is_restored_when_the_run_fails(previous_handler):
  handler, _ = previous_handler
  with pytest.raises(RuntimeError, match="boom"):
    with sigterm_flag():
      assert signal.getsignal(signal.SIGTERM) is not handler
      raise RuntimeError("boom")
  assert signal.getsignal(signal.SIGTERM) is handler


def test_other_signals(previous_handler):
  before = signal.getsignal(signal.SIGUSR1)
  with sigterm_flag((signal.SIGUSR1,)) as flag:
    os.kill(os.getpid(), signal.SIGUSR1)
    assert wait_for(flag)
  assert signal.getsignal(signal.SIGUSR1) is before
  assert signal.getsignal(signal.SIGTERM) is previous_handler[0]  # not touched


def test_off_the_main_thread_no_handler_is_installed(previous_handler):
  handler, _ = previous_handler
  seen = {}

  def body():
    with sigterm_flag() as flag:
      seen["handler"] = signal.getsignal(signal.SIGTERM)
      seen["flag"] = flag.requested()
      flag.set()  # it still works as a flag set by hand
      seen["set"] = flag.requested()
  thread = threading.Thread(target=body)
  thread.start()
  thread.join()
  assert seen == {"handler": handler, "flag": False, "set": True}
