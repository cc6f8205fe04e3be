"""`metrics.jsonl` on resume: cut back to the restored step, a torn line dropped with a warning."""

from __future__ import annotations

import json
import logging
import os

import pytest

from steptool_jax.config.run import LogSection
from steptool_jax.trainer.run.metrics import JSONL, MetricsWriter, MetricsWriteError, truncate_jsonl


def _lines(*steps):
  return "".join(json.dumps({"step": s, "loss": 0.5 + s}) + "\n" for s in steps)


def test_steps_after_the_restored_one_are_dropped(tmp_path):
  path = tmp_path / JSONL
  path.write_text(_lines(1, 2, 3, 4))
  truncate_jsonl(path, 2)
  assert path.read_text() == _lines(1, 2)


def test_a_torn_last_line_is_dropped_with_a_warning(tmp_path, caplog):
  path = tmp_path / JSONL
  path.write_text(_lines(1, 2) + '{"step": 3, "lo')  # killed while appending step 3
  with caplog.at_level(logging.WARNING):
    truncate_jsonl(path, 4)
  assert path.read_text() == _lines(1, 2)
  assert f"{path}:3: dropped a line that is not a metrics record" in caplog.text
  assert not [name for name in os.listdir(tmp_path) if name != JSONL]  # no temporary file left


def test_lines_that_are_not_records_are_dropped_wherever_they_are(tmp_path, caplog):
  path = tmp_path / JSONL
  path.write_text(_lines(1) + "[1, 2]\n" + '{"step": "2"}\n' + '{"step": true}\n' + _lines(2) + "\n\n")
  with caplog.at_level(logging.WARNING):
    truncate_jsonl(path, 2)
  assert path.read_text() == _lines(1, 2)
  assert [f"{path}:{n}:" in caplog.text for n in (2, 3, 4)] == [True, True, True]


def test_a_resumed_writer_appends_after_the_repair(tmp_path):
  path = tmp_path / JSONL
  path.write_text(_lines(1, 2) + '{"step": 3, "lo')
  writer = MetricsWriter(tmp_path, LogSection(tensorboard=False), resume_step=2)
  writer.write(3, {"loss": 3.5})
  writer.close()
  assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_a_healthy_file_is_not_rewritten(tmp_path):
  path = tmp_path / JSONL
  path.write_text(_lines(1, 2))
  before = os.stat(path).st_ino
  truncate_jsonl(path, 2)
  assert os.stat(path).st_ino == before  # atomic_write would have replaced the inode


def test_a_failed_append_stops_the_run_naming_the_file(tmp_path):
  writer = MetricsWriter(tmp_path, LogSection(tensorboard=False))

  class FullDisk:
    def write(self, text):
      raise OSError(28, "No space left on device")

    def close(self):
      pass
  writer._jsonl = FullDisk()
  with pytest.raises(MetricsWriteError) as raised:
    writer.write(7, {"loss": 1.0})
  assert str(raised.value) == f"log: appending step 7 to {tmp_path / JSONL} failed: No space left on device"
