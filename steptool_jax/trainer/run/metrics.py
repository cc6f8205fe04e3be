"""Where a run's metrics go: `WORKDIR/metrics.jsonl`, TensorBoard event files, and W&B.

One line of JSON per logged step (`{"step": ..., "name": value, ...}`), TensorBoard scalars
under `WORKDIR/tensorboard/`, and Weights & Biases when `log.wandb.enabled` (imported only
then; it is not a dependency). Only process 0 writes. Vector metrics (the mean reward of
each step position) are spread into scalars `reward/step_0`, `reward/step_1`, ...

On resume the JSONL file is cut back to the restored step, so a run that was killed
between checkpoints and resumed has each step exactly once, as an uninterrupted run would;
a line torn by a kill while appending is dropped then, with a warning.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any, Mapping

import numpy as np
from absl import logging

from steptool_jax.config.run import LogSection
from steptool_jax.data.files import atomic_write

JSONL = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricsWriteError(RuntimeError):
  """A metrics line could not be appended (disk full, permission): the run stops, as when a
  checkpoint cannot be saved."""


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
  """Device or numpy metrics -> plain floats; `reward/per_step` [S] -> `reward/step_s`."""
  out: dict[str, float] = {}
  for name, value in metrics.items():
    array = np.asarray(value)
    if array.ndim == 0:
      out[name] = float(array)
    elif name == "reward/per_step":
      out.update({f"reward/step_{s}": float(v) for s, v in enumerate(array)})
    else:
      out.update({f"{name}/{i}": float(v) for i, v in enumerate(array.reshape(-1))})
  return out


def truncate_jsonl(path: pathlib.Path, last_step: int) -> None:
  """Drops the lines of steps after `last_step` (steps a resumed run will redo), and lines
  that are not a JSON object with an integer `step` (a kill while appending tears the last
  one), each with a warning naming the file and line; rewritten atomically."""
  if not path.is_file():
    return
  text = path.read_text(encoding="utf-8", errors="replace")
  kept = []
  for number, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError:
      record = None
    step = record.get("step") if isinstance(record, dict) else None
    if isinstance(step, bool) or not isinstance(step, int):
      logging.warning("%s:%d: dropped a line that is not a metrics record (torn by a kill while appending?): %.80r",
                      path, number, line)
      continue
    if step <= last_step:
      kept.append(line)
  repaired = "".join(line + "\n" for line in kept)
  if repaired != text:
    with atomic_write(path) as f:
      f.write(repaired)


def _json_value(value: float) -> Any:
  # JSON has no NaN/inf; keep them readable rather than invalid.
  return value if math.isfinite(value) else str(value)


class MetricsWriter:
  """Writes scalars to every configured sink (a no-op on processes other than 0)."""

  def __init__(self, workdir: str | os.PathLike[str], log_config: LogSection, *,
               config_json: Mapping[str, Any] | None = None, resume_step: int = 0, enabled: bool = True):
    self.enabled = enabled
    self.jsonl_path = pathlib.Path(workdir) / JSONL
    self._tensorboard = None
    self._wandb = None
    if not enabled:
      return
    truncate_jsonl(self.jsonl_path, resume_step)
    self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
    if log_config.tensorboard:
      from tensorboardX import SummaryWriter  # noqa: PLC0415
      self._tensorboard = SummaryWriter(logdir=str(pathlib.Path(workdir) / TENSORBOARD_DIR))
    if log_config.wandb.enabled:
      try:
        import wandb  # noqa: PLC0415 (optional)
      except ImportError as e:
        raise ValueError("log.wandb.enabled: the wandb package is not installed (pip install wandb, or the"
                         " [wandb] extra)") from e
      wb = log_config.wandb
      self._wandb = wandb.init(project=wb.project, entity=wb.entity or None, name=wb.name or None, mode=wb.mode,
                               config=dict(config_json or {}), dir=str(workdir), resume="allow")

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": step, **{k: _json_value(v) for k, v in metrics.items()}}
    try:
      self._jsonl.write(json.dumps(record, sort_keys=True) + "\n")
      self._jsonl.flush()
    except OSError as e:
      raise MetricsWriteError(f"log: appending step {step} to {self.jsonl_path} failed: {e.strerror or e}") from None
    if self._tensorboard is not None:
      for name, value in metrics.items():
        self._tensorboard.add_scalar(name, value, step)
    if self._wandb is not None:
      self._wandb.log(dict(metrics), step=step)

  def write_text(self, name: str, text: str) -> None:
    if self.enabled and self._tensorboard is not None:
      self._tensorboard.add_text(name, text, 0)

  def close(self) -> None:
    if not self.enabled:
      return
    self._jsonl.close()
    if self._tensorboard is not None:
      self._tensorboard.close()
    if self._wandb is not None:
      self._wandb.finish()
