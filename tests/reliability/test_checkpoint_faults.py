"""Damaged checkpoints, torn metrics and failing saves: what a run does about each.

One uninterrupted 4-step tiny run (a checkpoint after every step) is the reference. Copies of
its workdir get one kind of damage each in the newest step; a restore must skip exactly that
step, say why, and give what the step before holds, and a resumed run must equal the
uninterrupted one (metrics without `perf/`, parameters, optimizer state). A full disk during
an async save is Orbax's array writes failing in its background thread
(`faults.fail_saves_from`); what the command line would show of it is what passes its log
filter.
"""

from __future__ import annotations

import gc
import io
import json
import logging
import os
import shutil

import jax
import numpy as np
import pytest

from steptool_jax import cli, train
from steptool_jax.export import restore_orbax_tree
from steptool_jax.trainer.run import checkpointing, integrity
from steptool_jax.trainer.run.metrics import JSONL
from tests.reliability import faults
from tests.trainer.fixtures import compile_cache, data_cache, tiny_run_config  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("compile_cache")

ONE_DEVICE = jax.devices()[:1]
TRAINED = ("params", "value_head")


def read_metrics(workdir) -> list[dict]:
  lines = (workdir / JSONL).read_text().splitlines()
  return [{k: v for k, v in json.loads(line).items() if not k.startswith("perf/")} for line in lines]


def config_of(data_cache):
  return tiny_run_config(data_cache, checkpoint__every_steps=1, checkpoint__keep=4)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data_cache, compile_cache):
  """The uninterrupted run: its workdir (checkpoints 1-4) and its result."""
  workdir = tmp_path_factory.mktemp("straight") / "run"
  result = train.train_and_evaluate(config_of(data_cache), workdir, devices=ONE_DEVICE)
  assert result.status == "finished" and result.step == 4
  return workdir, result


def copy_of(straight, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(straight[0], workdir)
  return workdir


def abstract_parts(state):
  """What `restore_newest` restores into: the saved parts' shapes, dtypes and shardings."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                      checkpointing.saved_parts(state, TRAINED))


def test_every_committed_step_is_sealed_with_a_manifest_that_verifies(straight):
  checkpointer = checkpointing.Checkpointer(straight[0], read_only=True)
  assert checkpointer.all_steps() == [1, 2, 3, 4]
  for step in checkpointer.all_steps():
    manifest = json.loads((checkpointer.step_dir(step) / integrity.MANIFEST).read_text())
    items = {name.split("/", 1)[0] for name in manifest["files"]}
    assert items == {"policy", "train_state", "progress", "config"}
    assert checkpointer.problem(step) is None
  checkpointer.close()


@pytest.mark.parametrize("damage", sorted(faults.DAMAGES))
def test_a_damaged_newest_step_is_skipped_for_the_one_before(straight, tmp_path, caplog, damage):
  workdir = copy_of(straight, tmp_path)
  step_dir = checkpointing.checkpoint_dir(workdir) / "4"
  faults.DAMAGES[damage](step_dir)
  target = abstract_parts(straight[1].state)
  checkpointer = checkpointing.Checkpointer(workdir, every_steps=1, keep=4)
  with caplog.at_level(logging.WARNING):
    step, restored = checkpointer.restore_newest(target)
  assert step == 3
  reference = checkpointing.Checkpointer(straight[0], read_only=True).restore(3, target)
  jax.tree.map(np.testing.assert_array_equal, {k: restored[k] for k in target}, {k: reference[k] for k in target})
  assert restored["progress"] == reference["progress"]
  # Skipped with the reason, and set aside so the resumed run can save step 4 again.
  assert f"checkpoint {step_dir} skipped: " in caplog.text
  assert checkpointer.all_steps() == [1, 2, 3]
  rejected = workdir / checkpointing.REJECTED_DIR / "4"
  assert rejected.is_dir() and (rejected / "REJECTED.txt").read_text().strip() in caplog.text
  checkpointer.close()


def test_flipped_bytes_are_silent_to_orbax_but_not_to_the_manifest(straight, tmp_path):
  workdir = copy_of(straight, tmp_path)
  step_dir = checkpointing.checkpoint_dir(workdir) / "4"
  faults.flip_bytes(step_dir)
  damaged = restore_orbax_tree(step_dir / "policy")  # Orbax reads it back without a word...
  original = restore_orbax_tree(checkpointing.checkpoint_dir(straight[0]) / "4" / "policy")
  changed = [not np.array_equal(a, b, equal_nan=True)
             for a, b in zip(jax.tree.leaves(damaged), jax.tree.leaves(original))]
  assert any(changed)  # ...with other values
  problem = checkpointing.Checkpointer(workdir, read_only=True).problem(4)
  assert problem.startswith("policy/") and "CRC-32" in problem and "its bytes changed" in problem
  # With checkpoint.verify off only sizes are compared: the same damage passes that check.
  assert checkpointing.Checkpointer(workdir, read_only=True, verify=False).problem(4) is None


def test_resuming_past_damaged_steps_and_a_torn_metrics_line_equals_the_uninterrupted_run(
    straight, tmp_path, data_cache, caplog):
  workdir = copy_of(straight, tmp_path)
  faults.flip_bytes(checkpointing.checkpoint_dir(workdir) / "4")
  faults.truncate_array_file(checkpointing.checkpoint_dir(workdir) / "3")
  with open(workdir / JSONL, "a", encoding="utf-8") as f:
    f.write('{"step": 5, "loss": 0.1')  # a kill while appending
  with caplog.at_level(logging.WARNING):
    resumed = train.train_and_evaluate(config_of(data_cache), workdir, devices=ONE_DEVICE)
  assert (resumed.start_step, resumed.step, resumed.status) == (2, 4, "finished")
  assert f"{workdir / JSONL}:5: dropped a line that is not a metrics record" in caplog.text
  assert "checkpoints/4 skipped: policy/" in caplog.text and "checkpoints/3 skipped: policy/" in caplog.text

  state = straight[1].state
  jax.tree.map(np.testing.assert_array_equal, {k: resumed.state.policy[k] for k in TRAINED},
               {k: state.policy[k] for k in TRAINED})
  jax.tree.map(np.testing.assert_array_equal, resumed.state.opt_state, state.opt_state)
  np.testing.assert_array_equal(resumed.state.kl.value, state.kl.value)
  assert read_metrics(workdir) == read_metrics(straight[0])
  # The PPO objective moves the right way in a real run: each batch's first epoch (one
  # optimizer step, all at the batch's starting weights) sees a surrogate of ~0 (whitened
  # advantages, ratio 1); the second epoch, after that step, a lower one.
  for m in read_metrics(straight[0]):
    assert abs(m["policy_loss_first_epoch"]) < 1e-5
    assert m["policy_loss_last_epoch"] < -1e-3
  # The steps it saved again are sealed and verify.
  checkpointer = checkpointing.Checkpointer(workdir, read_only=True)
  assert checkpointer.all_steps() == [1, 2, 3, 4] and all(checkpointer.problem(s) is None for s in (3, 4))
  assert sorted(os.listdir(workdir / checkpointing.REJECTED_DIR)) == ["3", "4"]


def test_when_no_checkpoint_verifies_the_run_stops_naming_the_directory(straight, tmp_path, data_cache):
  workdir = copy_of(straight, tmp_path)
  directory = checkpointing.checkpoint_dir(workdir)
  for step, damage in zip((1, 2, 3, 4), ("flipped bytes", "deleted train_state/", "empty _METADATA",
                                         "truncated array file")):
    faults.DAMAGES[damage](directory / str(step))
  with pytest.raises(checkpointing.CheckpointError) as raised:  # a ValueError: exit status 2
    train.train_and_evaluate(config_of(data_cache), workdir, devices=ONE_DEVICE)
  message = str(raised.value)
  assert isinstance(raised.value, ValueError)
  assert message.startswith(f"no checkpoint under {directory} can be restored (step 4: policy/")
  assert "step 2: train_state/" in message and "is missing" in message and "step 1: policy/" in message
  assert checkpointing.Checkpointer(workdir, read_only=True).all_steps() == [1, 2, 3, 4]  # nothing moved


def test_a_full_disk_during_an_async_save_stops_the_run_at_the_next_step(
    straight, tmp_path, data_cache, monkeypatch):
  workdir = tmp_path / "run"
  directory = checkpointing.checkpoint_dir(workdir)
  # What the command line shows of it: the records that pass its log filter.
  shown = io.StringIO()
  handler = logging.StreamHandler(shown)
  handler.addFilter(cli._QuietStartup())
  logging.getLogger().addHandler(handler)
  faults.fail_saves_from(2, monkeypatch.setattr)  # step 2's save fails in Orbax's background thread
  try:
    with pytest.raises(checkpointing.CheckpointSaveError) as raised:
      train.train_and_evaluate(config_of(data_cache), workdir, devices=ONE_DEVICE)
    gc.collect()  # asyncio reports Orbax's failed write futures when they are collected
  finally:
    logging.getLogger().removeHandler(handler)
  assert train.failure_status(raised.value) == train.EXIT_SAVE_FAILED == 3
  assert str(raised.value).startswith(f"checkpoint: saving step 2 to {directory / '2'} failed: No space left on device")
  assert f"The last good checkpoint is step 1 ({directory / '1'})" in str(raised.value)
  assert [m["step"] for m in read_metrics(workdir)] == [1, 2, 3]  # stopped after the next step
  assert sorted(os.listdir(directory)) == ["1"]  # step 1 intact, step 2's temporary files removed
  assert checkpointing.Checkpointer(workdir, read_only=True).problem(1) is None
  output = shown.getvalue()
  assert "Traceback" not in output and "never retrieved" not in output, output
  assert len(output.splitlines()) <= 5, output  # Orbax's own error lines, one each

  monkeypatch.undo()  # space freed: the same command resumes from step 1
  resumed = train.train_and_evaluate(config_of(data_cache), workdir, devices=ONE_DEVICE)
  assert (resumed.start_step, resumed.step) == (1, 4)
  assert read_metrics(workdir) == read_metrics(straight[0])
