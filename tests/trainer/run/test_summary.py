"""The end-of-run summary for hand-made records: first and last window means, what is left
out, a torn last line, the speed of this run's steps, and the preempted note."""

from __future__ import annotations

import json

from steptool_jax.trainer.run.summary import read_records, summary_lines


def records(n: int) -> list[dict]:
  """Step s: loss s, kl s / 10, score 1 - s / 100 on even steps only, tokens/s 100 s."""
  out = []
  for s in range(1, n + 1):
    record = {"step": s, "loss": float(s), "kl": s / 10, "perf/tokens_per_s": 100.0 * s}
    if s % 2 == 0:
      record["reward/score"] = 1 - s / 100
    out.append(record)
  return out


def test_the_lines_of_a_finished_run(tmp_path):
  (tmp_path / "tensorboard").mkdir()
  lines = summary_lines(tmp_path, records(12), status="finished", step=12, num_steps=12, steps_this_run=4,
                        seconds=161.4, checkpoint=tmp_path / "checkpoints" / "12")
  # Windows of 5: steps 1-5 and 8-12. Loss 3 -> 10; kl 0.3 -> 1.0; score over the even steps
  # in each window: (0.98 + 0.96) / 2 -> (0.92 + 0.90 + 0.88) / 3; tokens/s over this run's
  # last 4 steps: 100 x (9 + 10 + 11 + 12) / 4.
  assert lines == [
      "finished at step 12 of 12 in 2m 41s (4 steps this run, 1,050 tokens/s)",
      "  loss                       3.0000 -> 10.0000   (mean of the first 5 steps -> the last 5)",
      "  reward/score               0.970 -> 0.900",
      "  kl                         0.300 -> 1.000",
      f"checkpoint: {tmp_path}/checkpoints/12",
      "next:",
      f"  python -m steptool_jax.evaluate --workdir={tmp_path}",
      f"  python -m steptool_jax.export --checkpoint={tmp_path} --output={tmp_path}/hf",
      f"  tensorboard --logdir={tmp_path}/tensorboard",
  ]


def test_short_runs_average_fewer_steps_and_non_finite_values_are_skipped(tmp_path):
  recs = records(3)
  recs[0]["kl"] = "nan"  # written as a string by the metrics writer
  recs[2]["kl"] = float("inf")
  lines = summary_lines(tmp_path, recs, status="halted", step=3, num_steps=10, steps_this_run=0, seconds=3725,
                        checkpoint=None)
  assert lines[0] == "halted at step 3 of 10 in 1h 02m 05s (0 steps this run)"
  assert lines[1].split() == ["loss", "1.0000", "->", "3.0000", "(mean", "of", "the", "first", "1", "steps", "->",
                              "the", "last", "1)"]
  assert [line.split()[0] for line in lines[2:5]] == ["checkpoint:", "next:", "python"]
  assert "kl" not in "".join(lines) and "reward/score" not in "".join(lines)  # no finite value at one end
  assert lines[2] == "checkpoint: none written"
  assert not any("tensorboard" in line for line in lines)


def test_a_preempted_run_says_how_to_resume(tmp_path):
  lines = summary_lines(tmp_path, records(8), status="preempted", step=7, num_steps=20, steps_this_run=7,
                        seconds=59.6, checkpoint=tmp_path / "checkpoints" / "7")
  # Step 8's record (an earlier run's, past this run's last step) is not this run's: 100 x mean(1..7).
  assert lines[0] == "preempted at step 7 of 20 in 1m 00s (7 steps this run, 400 tokens/s)"
  assert lines[-1] == "  (preempted: run the same command again to resume from step 7)"


def test_read_records_skips_a_torn_last_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in records(3)) + '{"step": 4, "lo')
  assert read_records(path) == records(3)
  assert read_records(tmp_path / "missing.jsonl") == []
