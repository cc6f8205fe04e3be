"""What a checkpoint step must hold to be restored: its manifest, and the checks made before
and after reading it back.

Orbax commits a step atomically (a temporary directory renamed into place), but what happens
to the files afterwards it cannot see: a truncated array file, an emptied `_METADATA` or a
deleted item directory make the restore raise, and a few flipped bytes in an array file are
restored silently as other (possibly non-finite) values. So every step carries a manifest,
`<step>/steptool_manifest.json`, written while the step is still Orbax's temporary directory
(so a step is committed with its manifest or not at all):

    {"format": 1, "checksum": "crc32",
     "files": {"policy/_METADATA": {"bytes": 1234, "crc32": 305419896}, ...}}

every file of every item, by path relative to the step, with its size and (unless
`checkpoint.verify` is off) the CRC-32 of its bytes. The two files Orbax rewrites when it
commits the step, after the manifest (`COMMIT_FILES`), are left out. Nothing here knows which
items a checkpoint has: an item is the first component of a file's path.

At restore, `step_problem` checks a step's manifest (present and readable; every listed
file of the items wanted there with its size; with checksums, its CRC-32), and
`nonfinite_leaves` checks what Orbax read back. CRC-32 detects any burst of up to 32 flipped
bits and all but 2^-32 of other random damage; it is no defence against deliberate tampering.
Its cost is one read of the checkpoint's bytes at save (in Orbax's background thread) and
one at restore: on this project's 2-core VM ~1 s per GiB (docs/training.md, "What survives
which fault").
"""

from __future__ import annotations

import json
import os
import pathlib
import zlib
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

MANIFEST = "steptool_manifest.json"
FORMAT = 1
COMMIT_FILES = ("_CHECKPOINT_METADATA", "commit_success.txt")  # written by Orbax after the manifest
CHUNK_BYTES = 8 << 20


def file_crc32(path: str | os.PathLike[str]) -> int:
  """CRC-32 of a file's bytes, read in chunks (zlib releases the GIL while it sums)."""
  crc = 0
  buffer = bytearray(CHUNK_BYTES)
  view = memoryview(buffer)
  with open(path, "rb", buffering=0) as f:
    while True:
      read = f.readinto(buffer)
      if not read:
        return crc
      crc = zlib.crc32(view[:read], crc)


def _step_files(step_dir: pathlib.Path) -> list[pathlib.Path]:
  """Every file of the step's items (not the manifest, not the commit files), sorted."""
  return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST
                and not (p.parent == step_dir and p.name in COMMIT_FILES))


def manifest_of(step_dir: str | os.PathLike[str], *, checksums: bool) -> dict[str, Any]:
  """The manifest of the files now in `step_dir` (see the module docstring)."""
  step_dir = pathlib.Path(step_dir)
  files = {}
  for path in _step_files(step_dir):
    entry: dict[str, Any] = {"bytes": path.stat().st_size}
    if checksums:
      entry["crc32"] = file_crc32(path)
    files[path.relative_to(step_dir).as_posix()] = entry
  return {"format": FORMAT, "checksum": "crc32" if checksums else None, "files": files}


def write_manifest(step_dir: str | os.PathLike[str], *, checksums: bool) -> None:
  """Writes `step_dir/MANIFEST` (flushed to disk before Orbax renames the step into place)."""
  manifest = manifest_of(step_dir, checksums=checksums)
  path = pathlib.Path(step_dir) / MANIFEST
  with open(path, "w", encoding="utf-8") as f:
    json.dump(manifest, f, indent=0, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())


def has_manifest(step_dir: str | os.PathLike[str]) -> bool:
  return (pathlib.Path(step_dir) / MANIFEST).is_file()


def _read_manifest(step_dir: pathlib.Path) -> tuple[dict[str, Any] | None, str | None]:
  """(manifest, None), or (None, why it cannot be used)."""
  path = step_dir / MANIFEST
  try:
    manifest = json.loads(path.read_text(encoding="utf-8"))
  except FileNotFoundError:
    return None, f"no {MANIFEST}"
  except (OSError, UnicodeDecodeError, ValueError) as e:
    return None, f"{MANIFEST} is unreadable ({type(e).__name__}: {e})"
  files = manifest.get("files") if isinstance(manifest, dict) else None
  good = isinstance(files, dict) and all(
      isinstance(entry, dict) and isinstance(entry.get("bytes"), int) for entry in files.values())
  if not good or manifest.get("format") != FORMAT:
    return None, f"{MANIFEST} does not have the expected format {FORMAT}"
  return manifest, None


def step_problem(step_dir: str | os.PathLike[str], *, items: Iterable[str] | None = None,
                 checksums: bool = True) -> str | None:
  """Why the step in `step_dir` must not be restored, or None when its manifest verifies.

  Only the files of `items` (item directory names; None = all) are looked at, so reading
  one item (the policy, for evaluation) does not read the whole checkpoint. `checksums`
  False checks presence and sizes only (what the manifest holds when it was written with
  `checkpoint.verify` off).
  """
  step_dir = pathlib.Path(step_dir)
  if not step_dir.is_dir():
    return f"{step_dir} is not a directory"
  manifest, problem = _read_manifest(step_dir)
  if manifest is None:
    return problem
  files: Mapping[str, Mapping[str, Any]] = manifest["files"]
  wanted = None if items is None else set(items)
  if wanted is not None:
    missing_items = sorted(wanted - {name.split("/", 1)[0] for name in files})
    if missing_items:
      return f"the manifest lists no item {', '.join(missing_items)}"
  for name, entry in files.items():
    if wanted is not None and name.split("/", 1)[0] not in wanted:
      continue
    path = step_dir / name
    try:
      size = path.stat().st_size
    except OSError as e:
      return f"{name} is missing ({e.strerror})"
    if not path.is_file():
      return f"{name} is not a file"
    if size != entry["bytes"]:
      return f"{name} has {size} bytes, the manifest says {entry['bytes']} (truncated or overwritten)"
    if checksums and "crc32" in entry:
      try:
        crc = file_crc32(path)
      except OSError as e:
        return f"{name} is unreadable ({e.strerror})"
      if crc != entry["crc32"]:
        return f"{name} has CRC-32 {crc:#010x}, the manifest says {entry['crc32']:#010x} (its bytes changed)"
  return None


def nonfinite_leaves(tree: Any) -> list[str]:
  """The paths (`['policy']['params']...`) of the floating-point arrays in `tree` that hold
  NaN or inf. One jitted reduction per array, so sharded arrays are checked where they are."""
  leaves = [(path, leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
            if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact)]
  if not leaves:
    return []
  finite = jax.jit(lambda xs: jnp.stack([jnp.isfinite(x).all() for x in xs]))([leaf for _, leaf in leaves])
  # With several processes the (replicated) answer is not fully addressable: read the local copy.
  flags = np.asarray(finite if finite.is_fully_addressable else finite.addressable_data(0))
  return [jax.tree_util.keystr(path) for (path, _), ok in zip(leaves, flags) if not ok]
