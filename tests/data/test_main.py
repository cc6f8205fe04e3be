"""`python -m steptool_jax.data stats` on the reference files and on other files."""

import json
import pathlib
import subprocess
import sys

import pytest

from steptool_jax.data import __main__ as data_cli

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _stats(capsys, *argv):
  assert data_cli.main(["stats", *map(str, argv)]) == 0
  return json.loads(capsys.readouterr().out)


def test_tsv_stats(reference_dir, capsys):
  stats = _stats(capsys, reference_dir / "toolllama_step_grained_for_ppo.tsv")
  assert stats["format"] == "tsv" and stats["rows"] == 10 and stats["invalid_rows"] == 0
  assert stats["steps_per_row"] == {"min": 2, "mean": pytest.approx(3.6), "max": 4}
  # Final rewards of the ten rows, read off the file: 0 1 0 1 1 0 0 1 1 1.
  assert stats["reward"]["final_mean"] == pytest.approx(0.6)
  assert (stats["reward"]["min"], stats["reward"]["max"]) == (0.0, 1.0)


def test_annotation_stats_use_the_reward_formula(reference_dir, capsys):
  stats = _stats(capsys, reference_dir / "reward_annotation_G123.json")
  assert stats["format"] == "annotations" and stats["rows"] == 5
  assert stats["steps_per_row"] == {"min": 2, "mean": pytest.approx(3.2), "max": 5}
  # Final rewards: 1, 1, 5/6, 1, 1/3 (hand-computed in tests/rewards/test_shaping.py).
  assert stats["reward"]["final_mean"] == pytest.approx((1 + 1 + 5 / 6 + 1 + 1 / 3) / 5)
  assert stats["reward"]["min"] == pytest.approx(4 / 30)


@pytest.mark.parametrize("name, fmt, rows", [("converted_answers_G123.json", "converted_answers", 5),
                                             ("sft_conversations_G123.json", "sft", 38)])
def test_formats_without_rewards(reference_dir, capsys, name, fmt, rows):
  stats = _stats(capsys, reference_dir / name)
  assert (stats["format"], stats["rows"], stats["reward"]) == (fmt, rows, None)


def test_format_can_be_forced_and_detection_reads_content(reference_dir, tmp_path, capsys):
  renamed = tmp_path / "rows.txt"
  renamed.write_bytes((reference_dir / "toolllama_step_grained_for_ppo.tsv").read_bytes())
  assert _stats(capsys, renamed)["format"] == "tsv"
  assert _stats(capsys, renamed, "--format=tsv")["rows"] == 10
  assert data_cli.main(["stats", str(renamed), "--format=sft"]) == 2
  assert capsys.readouterr().err.startswith(f"{renamed}: file: expected SFT conversations")


def test_wrong_forced_format_is_bad_input(reference_dir, capsys):
  path = reference_dir / "converted_answers_G123.json"
  assert data_cli.main(["stats", str(path), "--format=annotations"]) == 2
  assert capsys.readouterr().err.startswith(f"{path}:32980: answer_steps: expected a list")


def test_runs_as_a_module(reference_dir):
  result = subprocess.run([sys.executable, "-m", "steptool_jax.data", "stats",
                           str(reference_dir / "toolllama_step_grained_for_ppo.tsv")],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout)["rows"] == 10
