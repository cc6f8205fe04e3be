"""The checkpointer's save protocol without a training run: every step sealed, a failed
background save raised once (by `check`, `wait`, the next `save` or `close`), and with
`async_save=False` by the save itself.

The saved parts are two small arrays (`saved_parts` is replaced); the storage failure is
Orbax's array writes failing with ENOSPC in its background thread (`faults.fail_saves_from`).
"""

from __future__ import annotations

import jax.numpy as jnp
import pytest

from steptool_jax.trainer.run import checkpointing, integrity
from tests.reliability import faults


@pytest.fixture(autouse=True)
def small_parts(monkeypatch):
  monkeypatch.setattr(checkpointing, "saved_parts", lambda state, keys: {
      "policy": {"w": jnp.arange(6.0) + state}, "train_state": {"step": jnp.int32(state)}})


def _save(checkpointer, step):
  return checkpointer.save(step, step, (), progress={"step": step}, config={"seed": 0})


@pytest.mark.parametrize("async_save", [True, False])
def test_every_step_is_committed_with_a_manifest_that_verifies(tmp_path, async_save):
  checkpointer = checkpointing.Checkpointer(tmp_path, every_steps=1, keep=5, async_save=async_save)
  for step in (1, 2, 3):
    assert _save(checkpointer, step)
    checkpointer.check()
  checkpointer.close()
  reader = checkpointing.Checkpointer(tmp_path, read_only=True)
  assert reader.all_steps() == [1, 2, 3]
  assert all(integrity.has_manifest(reader.step_dir(s)) and reader.problem(s) is None for s in (1, 2, 3))


def test_a_failed_background_save_is_raised_by_the_next_wait_and_only_once(tmp_path, monkeypatch):
  checkpointer = checkpointing.Checkpointer(tmp_path, every_steps=1, keep=5)
  assert _save(checkpointer, 1)
  faults.fail_saves_from(2, monkeypatch.setattr)
  assert _save(checkpointer, 2)  # started: the failure is in the background
  with pytest.raises(checkpointing.CheckpointSaveError, match="saving step 2 to .* failed: No space left on device"):
    checkpointer.wait()
  checkpointer.close()  # already reported: not raised again
  assert checkpointing.Checkpointer(tmp_path, read_only=True).all_steps() == [1]


def test_a_failure_first_seen_at_close_is_raised_there(tmp_path, monkeypatch):
  checkpointer = checkpointing.Checkpointer(tmp_path, every_steps=1, keep=5)
  faults.fail_saves_from(1, monkeypatch.setattr)
  assert _save(checkpointer, 1)
  with pytest.raises(checkpointing.CheckpointSaveError, match="The last good checkpoint is none"):
    checkpointer.close()


def test_without_async_saves_the_save_itself_raises(tmp_path, monkeypatch):
  checkpointer = checkpointing.Checkpointer(tmp_path, every_steps=1, keep=5, async_save=False)
  assert _save(checkpointer, 1)
  faults.fail_saves_from(2, monkeypatch.setattr)
  with pytest.raises(checkpointing.CheckpointSaveError, match=r"The last good checkpoint is step 1 \("):
    _save(checkpointer, 2)
  checkpointer.close()
  assert sorted(p.name for p in checkpointing.checkpoint_dir(tmp_path).iterdir()) == ["1"]
