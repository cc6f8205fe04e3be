"""Opening input files safely, writing output files atomically, and the skip-or-raise
policy every reader shares.

A reader parses records one by one and yields either the record or the `DataError`
that explains why that record is bad; `keep_valid` then decides whether the first
error stops the read or the bad records are counted and skipped. Problems with the
file as a whole (missing, not a regular file, not UTF-8, empty, not JSON) always raise:
there is nothing left to count.

Only regular files are read: a FIFO would block the reader until some writer appears and
a character device (`/dev/zero`, `/dev/urandom`) never ends, so both are refused before a
byte is read. JSON goes through `jsonio.loads_checked`: any nesting depth up to
`MAX_JSON_DEPTH` without recursion, and a key repeated within one object is an error of the
record it is in (or, for the top-level query ids, of that query id), never a silent loss.

`atomic_write` is how every data file is written: the text goes to a temporary file in the
same directory, is flushed to disk, and replaces the target in one `os.replace`, so a
reader (or the next run) sees the old file or the whole new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from typing import IO, Any, Iterable, Iterator, TypeVar

from steptool_jax.data.errors import DataError, describe
from steptool_jax.data.jsonio import MAX_JSON_DEPTH, DuplicateKey, JSONDepthError, loads_checked

T = TypeVar("T")

_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


@contextlib.contextmanager
def open_regular_file(path: str | os.PathLike[str], *, expected: str) -> Iterator[IO[bytes]]:
  """`path` opened for reading bytes, once it is known to be a regular file (symlinks followed).

  Raises:
    DataError: the path is missing or unreadable, or names a directory, FIFO, device or socket.
  """
  try:
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
  except OSError as e:
    raise DataError(path, None, "file", f"expected a readable {expected}, found {e.strerror}") from None
  try:
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
      kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
      raise DataError(path, None, "file", f"expected a regular file holding {expected}, found {kind}")
  except BaseException:
    os.close(fd)
    raise
  with open(fd, "rb") as f:
    yield f


def read_regular_file(path: str | os.PathLike[str], *, expected: str) -> bytes:
  """The bytes of a regular file (see `open_regular_file`)."""
  with open_regular_file(path, expected=expected) as f:
    try:
      return f.read()
    except OSError as e:
      raise DataError(path, None, "file", f"expected a readable {expected}, found {e.strerror}") from None


def read_utf8_text(path: str | os.PathLike[str], *, expected: str) -> str:
  """The whole file as text; `expected` says what the file should hold (for errors).

  Raises:
    DataError: the file is missing, not a regular file, not UTF-8 or empty.
  """
  data = read_regular_file(path, expected=expected)
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data[: e.start].count(b"\n") + 1
    raise DataError(
        path, None, "file",
        f"expected UTF-8 text, found byte 0x{data[e.start]:02x} at line {line}, offset {e.start}"
    ) from None
  if text.startswith("\ufeff"):  # a BOM written by some editors is not content
    text = text[1:]
  if not text.strip():
    raise DataError(path, None, "file", f"expected {expected}, found an empty file")
  return text


def load_json_records(path: str | os.PathLike[str], *, expected: str
                      ) -> tuple[dict[str, Any], dict[str, DataError]]:
  """A UTF-8 JSON file whose top level is an object (query id -> record), and the records
  that are bad because a key repeats: a query id given twice, or a key given twice in one
  object inside a record (the error names the record and the dotted path of the key).

  Raises:
    DataError: the file is unreadable, not JSON, nested deeper than `MAX_JSON_DEPTH`, or
      not an object at the top.
  """
  text = read_utf8_text(path, expected=expected)
  try:
    value, duplicates = loads_checked(text, max_depth=MAX_JSON_DEPTH)
  except json.JSONDecodeError as e:
    raise DataError(path, None, "file", f"expected {expected}, found invalid JSON at line {e.lineno},"
                    f" column {e.colno}: {e.msg}") from None
  except JSONDepthError as e:
    raise DataError(path, None, "file", f"expected {expected}, found {e}") from None
  except ValueError as e:  # an integer with more digits than Python converts
    raise DataError(path, None, "file", f"expected {expected}, found a number JSON cannot hold here: {e}") from None
  if not isinstance(value, dict):
    raise DataError(path, None, "file", f"expected {expected} (a JSON object keyed by query id),"
                    f" found {describe(value)}")
  return value, _duplicate_key_errors(path, value, duplicates)


def load_json_object(path: str | os.PathLike[str], *, expected: str) -> dict[str, Any]:
  """Like `load_json_records`, but a repeated key anywhere raises (for small keyed files)."""
  value, bad = load_json_records(path, expected=expected)
  if bad:
    raise next(iter(bad.values()))
  return value


def _duplicate_key_errors(path: str | os.PathLike[str], top: dict[str, Any], duplicates: list[DuplicateKey]
                          ) -> dict[str, DataError]:
  """Per query id, the DataError of its first repeated key (top-level ids first)."""
  bad: dict[str, DataError] = {}
  nested: dict[int, DuplicateKey] = {}
  for duplicate in duplicates:
    if duplicate.obj is top:
      bad[duplicate.key] = DataError(path, duplicate.key, "query id", f"expected each query id once, found it"
                                     f" {duplicate.count} times (JSON would keep only the last record)")
    else:
      nested.setdefault(id(duplicate.obj), duplicate)
  if not nested:
    return bad
  # Only now, with something to report, walk the records to name where it is (no recursion;
  # each entry points to its parent, so a path is spelled out only for the key found).
  for query_id, record in top.items():
    if query_id in bad:
      continue
    stack: list[tuple[Any, Any]] = [(record, None)]
    while stack:
      value, where = stack.pop()
      if isinstance(value, dict):
        duplicate = nested.get(id(value))
        if duplicate is not None and duplicate.obj is value:
          field = _spell_path((where, f".{duplicate.key}"))
          bad[query_id] = DataError(path, query_id, field, f"expected each key once per object, found it"
                                    f" {duplicate.count} times (JSON would keep only the last value)")
          break
        stack.extend((item, (where, f".{key}")) for key, item in reversed(value.items()))
      elif isinstance(value, list):
        stack.extend((item, (where, f"[{i}]")) for i, item in reversed(list(enumerate(value))))
  return bad


def _spell_path(where: Any, limit: int = 200) -> str:
  """`a.b[0].c` from the (parent, part) chain; a very deep path keeps its two ends."""
  parts = []
  while where is not None:
    where, part = where
    parts.append(part)
  field = "".join(reversed(parts)).lstrip(".")
  return field if len(field) <= limit else f"{field[:limit // 2]}...{field[-limit // 2:]}"


def keep_valid(results: Iterable[T | DataError], *, skip_invalid: bool = False,
               errors: list[DataError] | None = None) -> list[T]:
  """The good records; the first bad one raises unless `skip_invalid`.

  With `skip_invalid`, bad records are appended to `errors` (when given) so the
  caller can count and report them: nothing is dropped silently.
  """
  kept = []
  for result in results:
    if isinstance(result, DataError):
      if not skip_invalid:
        raise result
      if errors is not None:
        errors.append(result)
    else:
      kept.append(result)
  return kept


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", *, encoding: str | None = "utf-8",
                 newline: str | None = None) -> Iterator[IO[Any]]:
  """A file to write `path` through: it replaces `path` (the file a symlink points to, when
  `path` is one) only when the block ends without an exception, after flush and fsync; on
  an exception the temporary file is removed and `path` is untouched.

  The temporary file `.NAME.RANDOM.tmp` sits in the target's directory (so the rename never
  crosses file systems) and is created with the permissions `open(path, "w")` would give a
  new file (0o666 less the umask). A process killed mid-write can leave it behind; it is
  never mistaken for the target.

  Raises:
    OSError: the directory is missing or not writable, the disk is full, ...
  """
  if mode not in ("w", "wb"):
    raise ValueError(f"mode: expected 'w' or 'wb', found {mode!r}")
  target = os.path.realpath(path)
  directory, name = os.path.split(target)
  while True:
    temp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
    try:
      fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
      break
    except FileExistsError:
      continue
  try:
    with open(fd, mode, encoding=None if mode == "wb" else encoding, newline=None if mode == "wb" else newline) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(temp, target)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(temp)
    raise
  _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
  """Makes the rename itself durable (where the platform allows opening a directory)."""
  try:
    fd = os.open(directory or ".", os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)
