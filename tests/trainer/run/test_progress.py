"""The progress bar: counts from the resumed step, shows the metrics it knows, and is silent
when disabled (processes other than 0, `log.progress_bar=False`)."""

from __future__ import annotations

from steptool_jax.trainer.run.progress import Progress


def final_line(err: str) -> str:
  return err.replace("\r", "\n").strip().splitlines()[-1]


def test_the_bar_counts_from_the_resumed_step_and_shows_known_metrics(capsys):
  progress = Progress(10, 3, enabled=True, description="ppo")
  progress.update({"loss": 0.123456, "perf/tokens_per_s": 12345.6, "unknown": 7.0})
  progress.update({"loss": 0.5, "kl": 1.23456, "reward/score": 0.25, "perf/mfu": 0.1234})
  progress.close()
  final = final_line(capsys.readouterr().err)
  assert final.startswith("ppo:") and "5/10" in final
  assert "loss=0.5000" in final and "kl=1.235" in final and "score=0.250" in final and "mfu=12.3%" in final
  assert "tok/s" not in final and "unknown" not in final  # the postfix is the last step's

def test_the_formats(capsys):
  progress = Progress(2, 0, enabled=True)
  progress.update({"loss": 0.123456, "perf/tokens_per_s": 12345.6})
  progress.close()
  assert final_line(capsys.readouterr().err).endswith("loss=0.1235, tok/s=12,346]")


def test_a_disabled_bar_prints_nothing(capsys):
  progress = Progress(10, 0, enabled=False)
  progress.update({"loss": 1.0})
  progress.close()
  assert capsys.readouterr().err == ""


def test_write_prints_a_line_beside_the_bar(capsys):
  progress = Progress(4, 0, enabled=True)
  progress.write("checkpoint saved")
  progress.close()
  assert "checkpoint saved" in capsys.readouterr().out
