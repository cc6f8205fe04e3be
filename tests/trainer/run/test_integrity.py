"""A step's manifest: what it lists, and every kind of damage `step_problem` must notice.

The steps here are hand-made directories of small files (an item is the first directory of a
file's path), so the expected sizes and CRC-32s come from `zlib` over the bytes written.
"""

from __future__ import annotations

import json
import shutil
import zlib

import jax.numpy as jnp
import numpy as np
import pytest

from steptool_jax.trainer.run import integrity


@pytest.fixture
def step_dir(tmp_path):
  step = tmp_path / "4.orbax-checkpoint-tmp"
  files = {"policy/_METADATA": b'{"tree": 1}', "policy/d/abc": bytes(range(256)) * 40,
           "train_state/d/xyz": b"\x00" * 1000, "progress/metadata": b'{"step": 4}',
           "_CHECKPOINT_METADATA": b"{}", "commit_success.txt": b"ok"}
  for name, data in files.items():
    (step / name).parent.mkdir(parents=True, exist_ok=True)
    (step / name).write_bytes(data)
  integrity.write_manifest(step, checksums=True)
  return step


def test_the_manifest_lists_every_item_file_with_size_and_crc32(step_dir):
  manifest = json.loads((step_dir / integrity.MANIFEST).read_text())
  data = (step_dir / "policy/d/abc").read_bytes()
  assert manifest["checksum"] == "crc32"
  assert manifest["files"]["policy/d/abc"] == {"bytes": len(data), "crc32": zlib.crc32(data)}
  # The two files Orbax rewrites when it commits the step are not listed (nor the manifest).
  assert sorted(manifest["files"]) == ["policy/_METADATA", "policy/d/abc", "progress/metadata", "train_state/d/xyz"]
  assert integrity.step_problem(step_dir) is None


def test_file_crc32_reads_in_chunks_like_one_crc_of_the_whole(tmp_path, monkeypatch):
  monkeypatch.setattr(integrity, "CHUNK_BYTES", 7)
  data = bytes(range(256)) * 3
  (tmp_path / "f").write_bytes(data)
  assert integrity.file_crc32(tmp_path / "f") == zlib.crc32(data)


def _flip(path, offset):
  data = bytearray(path.read_bytes())
  data[offset] ^= 0x10
  path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, words", [
    (lambda s: (s / "policy/d/abc").write_bytes((s / "policy/d/abc").read_bytes()[:5000]),
     "policy/d/abc has 5000 bytes, the manifest says 10240 (truncated"),
    (lambda s: (s / "policy/_METADATA").write_bytes(b""), "policy/_METADATA has 0 bytes, the manifest says 11"),
    (lambda s: _flip(s / "policy/d/abc", 777), "policy/d/abc has CRC-32 0x"),
    (lambda s: shutil.rmtree(s / "train_state"), "train_state/d/xyz is missing"),
    (lambda s: (s / integrity.MANIFEST).unlink(), f"no {integrity.MANIFEST}"),
    (lambda s: (s / integrity.MANIFEST).write_text('{"files": '), f"{integrity.MANIFEST} is unreadable"),
    (lambda s: (s / integrity.MANIFEST).write_text('{"format": 1, "files": []}'), "does not have the expected format"),
])
def test_each_damage_is_named(step_dir, damage, words):
  damage(step_dir)
  problem = integrity.step_problem(step_dir)
  assert problem is not None and words in problem, problem


def test_without_checksums_sizes_and_presence_are_still_checked(step_dir):
  _flip(step_dir / "policy/d/abc", 777)
  assert integrity.step_problem(step_dir, checksums=False) is None  # a same-size change needs the checksum
  (step_dir / "train_state/d/xyz").write_bytes(b"\x00" * 999)
  assert "train_state/d/xyz has 999 bytes" in integrity.step_problem(step_dir, checksums=False)


def test_a_manifest_written_without_checksums_verifies_on_sizes(step_dir):
  integrity.write_manifest(step_dir, checksums=False)
  assert "crc32" not in json.loads((step_dir / integrity.MANIFEST).read_text())["files"]["policy/d/abc"]
  _flip(step_dir / "policy/d/abc", 1)
  assert integrity.step_problem(step_dir, checksums=True) is None


def test_only_the_items_asked_for_are_read(step_dir):
  (step_dir / "train_state/d/xyz").unlink()
  assert integrity.step_problem(step_dir, items=("policy", "progress")) is None
  assert "train_state/d/xyz is missing" in integrity.step_problem(step_dir, items=("policy", "train_state"))
  assert "lists no item critic" in integrity.step_problem(step_dir, items=("policy", "critic"))


def test_nonfinite_leaves_names_each_array_with_nan_or_inf():
  tree = {"policy": {"w": jnp.array([1.0, jnp.nan]), "b": jnp.zeros(3, jnp.bfloat16)},
          "opt": (jnp.array([jnp.inf]), np.arange(3)), "rng": jnp.zeros(2, jnp.uint32)}
  assert integrity.nonfinite_leaves(tree) == ["['opt'][0]", "['policy']['w']"]
  assert integrity.nonfinite_leaves({"ints": np.arange(3)}) == []
