"""The few lines a run ends with: what was learnt, how fast, where it is, what to run next.

    finished at step 60 of 60 in 2m 41s (60 steps this run, 8,123 tokens/s)
      loss          0.0521 -> 0.0113   (mean of the first 5 steps -> the last 5)
      reward/score  0.412 -> 0.455
      kl            0.000 -> 4.121
    checkpoint: /runs/tiny/checkpoints/60
    next:
      python -m steptool_jax.evaluate --workdir=/runs/tiny
      python -m steptool_jax.export --checkpoint=/runs/tiny --output=/runs/tiny/hf
      tensorboard --logdir=/runs/tiny/tensorboard

Read from `metrics.jsonl`, so a resumed run summarises the whole run, not only its last part.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any, Sequence

# (metric, format) in the order shown; a metric the run did not log is left out.
SHOWN = (("loss", "{:.4f}"), ("reward/score", "{:.3f}"), ("kl", "{:.3f}"), ("rollout/solved_rate", "{:.3f}"),
         ("rollout/mean_is_solved", "{:.3f}"), ("values/explained_variance", "{:.3f}"))
WINDOW = 5  # steps averaged at each end


def read_records(path: pathlib.Path) -> list[dict[str, Any]]:
  """The JSONL records (a torn last line, from a kill while appending, is left out)."""
  if not path.is_file():
    return []
  records = []
  for line in path.read_text(encoding="utf-8").splitlines():
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return records


def _mean(records: Sequence[dict[str, Any]], name: str) -> float | None:
  values = [r[name] for r in records if isinstance(r.get(name), (int, float)) and math.isfinite(r[name])]
  return sum(values) / len(values) if values else None


def _duration(seconds: float) -> str:
  minutes, secs = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def summary_lines(workdir: str | os.PathLike[str], records: Sequence[dict[str, Any]], *, status: str, step: int,
                  num_steps: int, steps_this_run: int, seconds: float, checkpoint: pathlib.Path | None) -> list[str]:
  """The summary of a run (module docstring)."""
  workdir = pathlib.Path(workdir)
  this_run = [r for r in records if isinstance(r.get("step"), int) and step - steps_this_run < r["step"] <= step]
  speed = _mean(this_run, "perf/tokens_per_s")
  rate = f", {speed:,.0f} tokens/s" if speed is not None else ""
  lines = [f"{status} at step {step} of {num_steps} in {_duration(seconds)} ({steps_this_run} steps this run{rate})"]
  window = max(1, min(WINDOW, len(records) // 2))
  first, last = records[:window], records[-window:]
  width = max(len(name) for name, _ in SHOWN)
  for name, fmt in SHOWN:
    start, end = _mean(first, name), _mean(last, name)
    if start is None or end is None:
      continue
    note = f"   (mean of the first {window} steps -> the last {window})" if name == "loss" else ""
    lines.append(f"  {name:<{width}}  {fmt.format(start)} -> {fmt.format(end)}{note}")
  lines.append(f"checkpoint: {checkpoint if checkpoint is not None else 'none written'}")
  lines.append("next:")
  lines.append(f"  python -m steptool_jax.evaluate --workdir={workdir}")
  lines.append(f"  python -m steptool_jax.export --checkpoint={workdir} --output={workdir / 'hf'}")
  if (workdir / "tensorboard").is_dir():
    lines.append(f"  tensorboard --logdir={workdir / 'tensorboard'}")
  if status == "preempted":
    lines.append(f"  (preempted: run the same command again to resume from step {step})")
  return lines
