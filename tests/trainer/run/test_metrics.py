"""The metrics sinks: scalars out of device arrays, JSONL lines that stay valid JSON with NaN in
them, the file cut back on resume (torn and foreign lines dropped), a failed append named, and nothing at all from processes other than 0."""

from __future__ import annotations

import importlib.util
import json
import logging
import os

import jax.numpy as jnp
import numpy as np
import pytest

from steptool_jax.config.run import LogSection, WandbSection
from steptool_jax.trainer.run.metrics import (JSONL, TENSORBOARD_DIR, MetricsWriteError, MetricsWriter, scalar_metrics,
                                              truncate_jsonl)

NO_TENSORBOARD = LogSection(tensorboard=False)


def strict_json(line: str):
  """json.loads that refuses NaN/Infinity literals (not JSON; many readers reject them)."""
  def refuse(name):
    raise ValueError(f"not JSON: {name}")
  return json.loads(line, parse_constant=refuse)


def test_scalar_metrics():
  metrics = {"loss": jnp.float32(1.5), "rows": np.int32(4), "reward/per_step": jnp.array([0.25, 0.5, 1.0]),
             "hist": np.array([[1.0, 2.0], [3.0, 4.0]]), "plain": 2}
  out = scalar_metrics(metrics)
  assert out == {"loss": 1.5, "rows": 4.0, "reward/step_0": 0.25, "reward/step_1": 0.5, "reward/step_2": 1.0,
                 "hist/0": 1.0, "hist/1": 2.0, "hist/2": 3.0, "hist/3": 4.0, "plain": 2.0}
  assert all(type(v) is float for v in out.values())


def write_lines(path, steps):
  path.write_text("".join(json.dumps({"step": s, "loss": float(s)}) + "\n" for s in steps) + "\n")


def test_truncate_jsonl_drops_the_steps_after_the_restored_one(tmp_path):
  path = tmp_path / JSONL
  write_lines(path, [1, 2, 3, 4, 5])
  truncate_jsonl(path, 3)
  assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]
  assert path.read_text().endswith("}\n")
  truncate_jsonl(path, 0)
  assert path.read_text() == ""


def test_truncate_jsonl_without_a_file_creates_none(tmp_path):
  truncate_jsonl(tmp_path / JSONL, 3)
  assert not (tmp_path / JSONL).exists()


def test_the_writer_writes_one_json_line_per_step(tmp_path):
  writer = MetricsWriter(tmp_path, NO_TENSORBOARD)
  writer.write(1, {"loss": 0.5, "kl": 0.25})
  writer.write(2, {"loss": float("nan"), "kl": float("inf"), "score": -float("inf")})
  writer.close()
  lines = [strict_json(line) for line in (tmp_path / JSONL).read_text().splitlines()]
  assert lines == [{"step": 1, "loss": 0.5, "kl": 0.25}, {"step": 2, "loss": "nan", "kl": "inf", "score": "-inf"}]
  assert not (tmp_path / TENSORBOARD_DIR).exists()


def test_a_resumed_writer_continues_after_the_restored_step(tmp_path):
  write_lines(tmp_path / JSONL, [1, 2, 3, 4])
  writer = MetricsWriter(tmp_path, NO_TENSORBOARD, resume_step=2)
  writer.write(3, {"loss": 30.0})
  writer.close()
  assert [strict_json(line) for line in (tmp_path / JSONL).read_text().splitlines()] == [
      {"step": 1, "loss": 1.0}, {"step": 2, "loss": 2.0}, {"step": 3, "loss": 30.0}]


def test_processes_other_than_0_write_nothing(tmp_path):
  write_lines(tmp_path / JSONL, [1, 2, 3])
  before = (tmp_path / JSONL).read_text()
  writer = MetricsWriter(tmp_path, LogSection(tensorboard=True), resume_step=1, enabled=False)
  writer.write(2, {"loss": 1.0})
  writer.write_text("config", "text")
  writer.close()
  assert (tmp_path / JSONL).read_text() == before  # not even truncated: process 0 does that
  assert sorted(p.name for p in tmp_path.iterdir()) == [JSONL]
  fresh = tmp_path / "fresh"
  fresh.mkdir()
  MetricsWriter(fresh, NO_TENSORBOARD, enabled=False).write(1, {"loss": 1.0})
  assert list(fresh.iterdir()) == []


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_wandb_without_the_package_names_the_setting(tmp_path):
  with pytest.raises(ValueError, match=r"^log.wandb.enabled: the wandb package is not installed"):
    MetricsWriter(tmp_path, LogSection(tensorboard=False, wandb=WandbSection(enabled=True)))


def _lines(*steps):
  return "".join(json.dumps({"step": s, "loss": 0.5 + s}) + "\n" for s in steps)


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
