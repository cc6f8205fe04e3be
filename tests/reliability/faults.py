"""Faults to inject into a run's checkpoints: damage to a committed step's files, and storage
that fails while Orbax writes in the background.

The damage functions take a step directory (`WORKDIR/checkpoints/<step>`) and know only
Orbax's layout (an item directory per saved part, array data in files under it), so they
work on any item. `fail_saves_from(step)` makes Orbax's array writes of every later step
fail in the background as a full disk does: the commit futures raise `OSError(ENOSPC)`.
It imports nothing from the test session, so a subprocess can use it as well
(`python -c "...; fail_saves_from(4); runpy.run_module('steptool_jax.train', ...)"`).
"""

from __future__ import annotations

import errno
import os
import pathlib
import re
import shutil
import tempfile
from typing import Any, Callable

import numpy as np


def largest_file(item_dir: pathlib.Path) -> pathlib.Path:
  """The biggest file of an item: its array data."""
  return max((p for p in item_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def truncate_array_file(step_dir: pathlib.Path, item: str = "policy") -> None:
  path = largest_file(step_dir / item)
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])


def empty_metadata(step_dir: pathlib.Path, item: str = "train_state") -> None:
  (step_dir / item / "_METADATA").write_bytes(b"")


def delete_item(step_dir: pathlib.Path, item: str = "train_state") -> None:
  shutil.rmtree(step_dir / item)


def flip_bytes(step_dir: pathlib.Path, item: str = "policy", count: int = 8) -> None:
  """XORs `count` bytes spread over the middle of the item's array data (same size)."""
  path = largest_file(step_dir / item)
  data = bytearray(path.read_bytes())
  for offset in np.linspace(len(data) * 0.4, len(data) * 0.6, count).astype(int):
    data[offset] ^= 0x5A
  path.write_bytes(bytes(data))


def remove_manifest(step_dir: pathlib.Path) -> None:
  from steptool_jax.trainer.run import integrity  # noqa: PLC0415
  (step_dir / integrity.MANIFEST).unlink()


def nan_in_policy(step_dir: pathlib.Path) -> None:
  """Writes the policy item again with its first floating-point value NaN, and a manifest that
  matches the new files: only the finiteness check can tell."""
  import jax  # noqa: PLC0415
  import orbax.checkpoint as ocp  # noqa: PLC0415

  from steptool_jax.export import restore_orbax_tree  # noqa: PLC0415
  from steptool_jax.trainer.run import integrity  # noqa: PLC0415

  tree = jax.tree.map(np.array, restore_orbax_tree(step_dir / "policy"))
  first = next(leaf for leaf in jax.tree.leaves(tree) if np.issubdtype(leaf.dtype, np.floating))
  first.reshape(-1)[0] = np.nan
  with tempfile.TemporaryDirectory(dir=step_dir.parent.parent) as scratch:
    saver = ocp.StandardCheckpointer()
    saver.save(pathlib.Path(scratch).absolute() / "policy", tree)
    saver.wait_until_finished()
    saver.close()
    shutil.rmtree(step_dir / "policy")
    shutil.move(pathlib.Path(scratch) / "policy", step_dir / "policy")
  integrity.write_manifest(step_dir, checksums=True)


DAMAGES = {
    "truncated array file": truncate_array_file,
    "empty _METADATA": empty_metadata,
    "deleted train_state/": delete_item,
    "flipped bytes": flip_bytes,
    "non-finite values": nan_in_policy,
    "manifest removed": remove_manifest,
}


class _FailedWrite:
  """A commit future whose write failed (what Orbax waits on in its background thread)."""

  def __init__(self, error: BaseException):
    self.error = error

  def result(self, timeout: float | None = None) -> None:
    raise self.error

  def cancel(self) -> None:
    pass


def fail_saves_from(step: int, setattr: Callable[[Any, str, Any], None] = setattr) -> None:
  """From `step` on, every array item's background write fails with ENOSPC (after Orbax has
  started its own writes: the step's temporary directory holds partial files, as on a disk
  that filled up). Tests pass `monkeypatch.setattr` to undo it afterwards."""
  from orbax.checkpoint import handlers  # noqa: PLC0415

  original = handlers.StandardCheckpointHandler.async_save

  async def async_save(self, directory, *args, **kwargs):
    futures = await original(self, directory, *args, **kwargs)
    path = str(getattr(directory, "path", directory))
    found = re.search(r"/(\d+)\.orbax-checkpoint-tmp", path)
    if found and int(found.group(1)) >= step:
      error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
      futures = [*(futures or []), _FailedWrite(error)]
    return futures

  setattr(handlers.StandardCheckpointHandler, "async_save", async_save)
