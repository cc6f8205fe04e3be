"""`annotate` with a bad --output or option: exit 2, one line naming the flag, inputs untouched."""

import os
import shutil
import subprocess
import sys

import pytest

from steptool_jax import annotate

ANSWERS = "converted_answers_G123.json"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def answers(reference_dir, tmp_path):
  path = tmp_path / "answers.json"
  shutil.copyfile(reference_dir / ANSWERS, path)
  return path


def _run(capsys, *argv):
  code = annotate.main([str(a) for a in argv])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def _fails_cleanly(capsys, answers, *argv, words):
  before = answers.read_bytes(), os.stat(answers).st_mtime_ns
  listing = sorted(os.listdir(answers.parent))
  code, out, err = _run(capsys, f"--input={answers}", "--template=toolllama", *argv)
  assert (code, out) == (2, "")
  assert err.count("\n") == 1 and err.startswith("error: ") and words in err, err
  assert (answers.read_bytes(), os.stat(answers).st_mtime_ns) == before
  assert sorted(os.listdir(answers.parent)) == listing  # nothing written, no temporary file left


def test_output_in_a_missing_directory(capsys, answers, tmp_path):
  _fails_cleanly(capsys, answers, f"--output={tmp_path / 'missing' / 'out.tsv'}",
                 words=f"--output: expected a file in an existing directory, found no directory {tmp_path / 'missing'}")


def test_output_under_a_regular_file(capsys, answers, tmp_path):
  (tmp_path / "file").write_text("x")
  _fails_cleanly(capsys, answers, f"--output={tmp_path / 'file' / 'out.tsv'}",
                 words=f"found {tmp_path / 'file'} is not a directory")


def test_output_is_a_directory(capsys, answers, tmp_path):
  _fails_cleanly(capsys, answers, f"--output={tmp_path}", words=f"--output: expected a file path, found the directory")


@pytest.mark.parametrize("alias", ["same", "symlink", "hardlink", "dotted"])
def test_output_equal_to_the_input_is_refused(capsys, answers, tmp_path, alias):
  output = {"same": answers, "symlink": tmp_path / "link.json", "hardlink": tmp_path / "hard.json",
            "dotted": tmp_path / "." / "answers.json"}[alias]
  if alias == "symlink":
    output.symlink_to(answers)
  elif alias == "hardlink":
    os.link(answers, output)
  _fails_cleanly(capsys, answers, f"--output={output}",
                 words="--output: expected a file other than the input, found the same file as --input")


def test_output_equal_to_the_annotations_file_is_refused(capsys, answers, reference_dir, tmp_path):
  annotations = tmp_path / "ann.json"
  shutil.copyfile(reference_dir / "reward_annotation_G123.json", annotations)
  before = annotations.read_bytes()
  _fails_cleanly(capsys, answers, f"--output={annotations}", "--is-solved=annotations", f"--annotations={annotations}",
                 words="found the same file as --annotations")
  assert annotations.read_bytes() == before


@pytest.mark.parametrize("flag, value", [("--alpha", "nan"), ("--alpha", "inf"), ("--alpha", "-1"),
                                         ("--threshold", "nan"), ("--threshold", "1.5"), ("--threshold", "-0.1")])
def test_option_values_no_method_can_use_name_the_flag(capsys, answers, tmp_path, flag, value):
  _fails_cleanly(capsys, answers, f"--output={tmp_path / 'out.tsv'}", f"{flag}={value}",
                 words=f"error: {flag}: expected")


def test_alpha_is_checked_before_reading_not_reported_as_row_1(capsys, reference_dir, tmp_path):
  code, _, err = _run(capsys, f"--input={reference_dir / 'reward_annotation_G123.json'}",
                      f"--output={tmp_path / 'out.tsv'}", "--template=toolllama", "--method=annotations", "--alpha=nan")
  assert code == 2 and err.startswith("error: --alpha: expected a finite number >= 0") and ":1:" not in err


def test_bad_input_leaves_an_existing_output_as_it_was(capsys, tmp_path):
  bad = tmp_path / "bad.json"
  bad.write_text('{"9": {"query": "q", "available_tools": [], "answer": {"answer_details": 3}}}')
  out = tmp_path / "out.tsv"
  out.write_text("the previous output\n")
  code, _, err = _run(capsys, f"--input={bad}", f"--output={out}", "--template=toolllama")
  assert code == 2 and err.startswith(f"{bad}:9: answer.answer_details:")
  assert out.read_text() == "the previous output\n" and sorted(os.listdir(tmp_path)) == ["bad.json", "out.tsv"]


def test_unwritable_output_directory_as_a_module_gives_no_traceback(answers, tmp_path):
  """As a user runs it: a child process, stderr checked for a traceback."""
  result = subprocess.run([sys.executable, "-m", "steptool_jax.annotate", f"--input={answers}",
                           f"--output={answers / 'out.tsv'}", "--template=toolllama"],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert result.stderr == f"error: --output: expected a file in an existing directory, found {answers} is not a" \
                          " directory\n"
