"""Reading only regular files; writing atomically; JSON records with repeated keys."""

import json
import os
import stat

import pytest

from steptool_jax.data.errors import DataError
from steptool_jax.data.files import atomic_write, load_json_object, load_json_records, read_regular_file


def test_fifo_is_refused_without_blocking(tmp_path):
  fifo = tmp_path / "pipe"
  os.mkfifo(fifo)  # no writer: a plain open() for reading would wait forever
  with pytest.raises(DataError, match=r"pipe: file: expected a regular file holding .*, found a FIFO"):
    read_regular_file(fifo, expected="x")


def test_character_device_is_refused_before_reading(tmp_path):
  with pytest.raises(DataError, match=r"/dev/zero: file: expected a regular file .*, found a character device"):
    read_regular_file("/dev/zero", expected="x")  # endless: reading it would never stop


def test_directory_and_missing_file(tmp_path):
  with pytest.raises(DataError, match=r"found a directory"):
    read_regular_file(tmp_path, expected="x")
  with pytest.raises(DataError, match=r"missing: file: expected a readable x, found No such file"):
    read_regular_file(tmp_path / "missing", expected="x")


def test_symlink_to_a_regular_file_is_read(tmp_path):
  (tmp_path / "real").write_bytes(b"abc")
  (tmp_path / "link").symlink_to(tmp_path / "real")
  assert read_regular_file(tmp_path / "link", expected="x") == b"abc"


def test_atomic_write_replaces_only_on_success(tmp_path):
  path = tmp_path / "out.txt"
  path.write_text("old")
  with pytest.raises(RuntimeError):
    with atomic_write(path) as f:
      f.write("half of the new")
      raise RuntimeError("killed mid-write")
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["out.txt"]  # no temporary file left behind
  with atomic_write(path) as f:
    f.write("new")
  assert path.read_text() == "new"
  assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_write_gives_the_permissions_open_gives(tmp_path):
  with atomic_write(tmp_path / "atomic") as f:
    f.write("x")
  with open(tmp_path / "plain", "w") as f:
    f.write("x")
  assert stat.S_IMODE(os.stat(tmp_path / "atomic").st_mode) == stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)


def test_atomic_write_through_a_symlink_replaces_the_target(tmp_path):
  (tmp_path / "real").write_text("old")
  (tmp_path / "link").symlink_to(tmp_path / "real")
  with atomic_write(tmp_path / "link") as f:
    f.write("new")
  assert (tmp_path / "link").is_symlink() and (tmp_path / "real").read_text() == "new"


def test_atomic_write_binary_and_newline_modes(tmp_path):
  with atomic_write(tmp_path / "b", "wb") as f:
    f.write(b"\x00\xff")
  assert (tmp_path / "b").read_bytes() == b"\x00\xff"
  with atomic_write(tmp_path / "t", newline="") as f:
    f.write("a\r\nb\n")
  assert (tmp_path / "t").read_bytes() == b"a\r\nb\n"
  with pytest.raises(ValueError, match="mode"):
    with atomic_write(tmp_path / "x", "a"):
      pass


def test_atomic_write_into_a_missing_directory_is_an_os_error(tmp_path):
  with pytest.raises(FileNotFoundError):
    with atomic_write(tmp_path / "missing" / "out.txt") as f:
      f.write("x")


def test_repeated_query_id_and_repeated_inner_key_name_the_record(tmp_path):
  path = tmp_path / "records.json"
  path.write_text('{"1": {"a": 1}, "2": {"x": [{"k": 1, "k": 2}]}, "3": {"a": 3}, "1": {"a": 4}}')
  data, bad = load_json_records(path, expected="records")
  assert list(data) == ["1", "2", "3"]  # JSON keeps the first position, the last value
  assert {query_id: (e.row, e.field) for query_id, e in bad.items()} == {"1": ("1", "query id"), "2": ("2", "x[0].k")}
  assert "found it 2 times" in bad["1"].message and "found it 2 times" in bad["2"].message
  with pytest.raises(DataError, match=r"records.json:1: query id: expected each query id once"):
    load_json_object(path, expected="records")


def test_json_nested_deeper_than_the_cap_is_a_file_error(tmp_path, monkeypatch):
  from steptool_jax.data import files
  monkeypatch.setattr(files, "MAX_JSON_DEPTH", 2000)
  path = tmp_path / "deep.json"
  path.write_text('{"1": ' + "[" * 3000 + "]" * 3000 + "}")
  with pytest.raises(DataError, match=r"deep.json: file: expected records, found nesting deeper than 2,000 levels"):
    load_json_records(path, expected="records")


def test_json_integer_too_long_for_python_is_a_file_error(tmp_path):
  path = tmp_path / "digits.json"
  path.write_text(json.dumps({"1": 1})[:-2] + "9" * 5000 + "}")
  with pytest.raises(DataError, match=r"digits.json: file: expected records, found a number JSON cannot hold"):
    load_json_records(path, expected="records")
