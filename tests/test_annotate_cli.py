"""`python -m steptool_jax.annotate`: reference files in, step-grained TSV out."""

import json
import pathlib
import subprocess
import sys

import pytest

from steptool_jax import annotate
from steptool_jax.data.records import ToolCall, Trajectory
from steptool_jax.data.tsv import read_step_grained_tsv

ANSWERS = "converted_answers_G123.json"
ANNOTATIONS = "reward_annotation_G123.json"

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(capsys, *argv):
  code = annotate.main([str(a) for a in argv])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def test_annotations_method_writes_the_paper_rewards(reference_dir, tmp_path, capsys):
  out = tmp_path / "out.tsv"
  code, stdout, _ = _run(capsys, f"--input={reference_dir / ANNOTATIONS}", f"--output={out}",
                         "--template=toolllama", "--method=annotations")
  assert code == 0 and json.loads(stdout)["rows"] == 5
  rows = read_step_grained_tsv(out)
  assert [row.num_steps for row in rows] == [5, 3, 2, 3, 3]
  assert rows[2].rewards == pytest.approx((1.0, 5 / 6))  # query 44426
  assert rows[4].rewards == pytest.approx((4 / 30, 13 / 30, 1 / 3))  # query 56543
  assert rows[2].prompts[0].startswith("System:\nSpecifically, you have access to the following APIs: "
                                       "['team_roster_for_national_football_players', ")
  assert rows[2].prompts[0].endswith("Begin!\n\nAssistant:\n")
  assert rows[2].responses[0] == 'Action: team_roster_for_national_football_players\nAction Input: {"team":"NE"}\n'
  assert rows[2].prompts[1].startswith('Function:\n{"error": "", "response": [{"player": "Adrian Phillips"')


@pytest.mark.parametrize("template, marker", [("qwen2", "<|im_end|>"), ("llama3", "<|eot_id|>")])
def test_rules_method_on_converted_answers(reference_dir, tmp_path, capsys, template, marker):
  out = tmp_path / "out.tsv"
  code, _, _ = _run(capsys, f"--input={reference_dir / ANSWERS}", f"--output={out}", f"--template={template}",
                    "--is-solved=annotations", f"--annotations={reference_dir / ANNOTATIONS}")
  assert code == 0
  rows = read_step_grained_tsv(out)
  assert len(rows) == 5 and all(response.endswith(marker) for row in rows for response in row.responses)
  # 44426: the roster call succeeded and its payload is well covered by the answer; IsSolved 5/6.
  assert rows[2].rewards == pytest.approx((1.0, 5 / 6))
  # 56543: call 1 returned an empty response (SC 0, Con 0); call 2 succeeded, little of it was used.
  assert rows[4].rewards == pytest.approx((0.0, 0.5, 1 / 3))


def test_default_is_solved_is_unsure_for_answers(reference_dir, tmp_path, capsys):
  out = tmp_path / "out.tsv"
  assert _run(capsys, f"--input={reference_dir / ANSWERS}", f"--output={out}", "--template=toolllama")[0] == 0
  assert [row.rewards[-1] for row in read_step_grained_tsv(out)] == [0.5] * 5


def test_a_new_method_plugs_into_the_registry(reference_dir, tmp_path, capsys, monkeypatch):
  def constant(path, options, errors):
    trajectory = Trajectory("1", "q", (), (ToolCall("t", "{}", "r"),), ToolCall("Finish", "{}"))
    yield trajectory, (0.25, 0.75)
  monkeypatch.setitem(annotate.METHODS, "judge", constant)
  out = tmp_path / "out.tsv"
  code, _, _ = _run(capsys, f"--input={reference_dir / ANSWERS}", f"--output={out}", "--template=toolllama",
                    "--method=judge")
  assert code == 0
  assert read_step_grained_tsv(out)[0].rewards == (0.25, 0.75)


def test_bad_input_exits_2_and_writes_nothing(reference_dir, tmp_path, capsys):
  bad = tmp_path / "answers.json"
  bad.write_text(json.dumps({"9": {"query": "q", "available_tools": [], "answer": {"answer_details": 3}}}))
  out = tmp_path / "out.tsv"
  code, _, err = _run(capsys, f"--input={bad}", f"--output={out}", "--template=toolllama")
  assert code == 2 and err.startswith(f"{bad}:9: answer.answer_details: expected a list of nodes")
  assert not out.exists() and not (tmp_path / "out.tsv.partial").exists()
  code, _, err = _run(capsys, f"--input={reference_dir / ANSWERS}", f"--output={out}", "--template=toolllama",
                      "--method=annotations")
  assert code == 2 and "expected a reward annotation file for --method=annotations, found converted_answers" in err


def test_runs_as_a_module(reference_dir, tmp_path):
  out = tmp_path / "out.tsv"
  result = subprocess.run([sys.executable, "-m", "steptool_jax.annotate", f"--input={reference_dir / ANNOTATIONS}",
                           f"--output={out}", "--template=llama3", "--method=annotations"],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
  assert result.returncode == 0, result.stderr
  assert len(read_step_grained_tsv(out)) == 5


def test_other_files_of_the_same_format(tmp_path, capsys):
  """A converted-answers file written from scratch: thoughts, a give-up, an error envelope."""
  from steptool_jax.data import __main__ as data_cli
  from steptool_jax.data.records import ToolSpec
  from steptool_jax.data.toolbench import write_converted_answers

  ok = json.dumps({"error": "", "response": "Paris: sunny, 21 C"})
  failed = json.dumps({"error": "HTTP 500", "response": ""})
  answered = Trajectory("a", "Weather in Paris?", (ToolSpec("w"), ToolSpec("Finish")),
                        (ToolCall("w", '{"city": "Paris"}', ok, thought="Ask the weather tool."),),
                        ToolCall("Finish", json.dumps({"return_type": "give_answer",
                                                       "final_answer": "Paris: sunny, 21 C."})))
  gave_up = Trajectory("b", "Weather on Mars?", (ToolSpec("w"), ToolSpec("Finish")),
                       (ToolCall("w", '{"city": "Mars"}', failed),),
                       ToolCall("Finish", json.dumps({"return_type": "give_up_and_restart"})))
  answers = tmp_path / "my_answers.json"
  write_converted_answers(answers, [answered, gave_up])

  assert data_cli.main(["stats", str(answers)]) == 0
  stats = json.loads(capsys.readouterr().out)
  assert (stats["format"], stats["rows"], stats["steps_per_row"]["max"]) == ("converted_answers", 2, 2)

  out = tmp_path / "out.tsv"
  assert _run(capsys, f"--input={answers}", f"--output={out}", "--template=toolllama")[0] == 0
  rows = read_step_grained_tsv(out)
  # answered: SC 1, Con 1 -> 1; Unsure 0.5. gave_up: SC 0, Con 0 -> 0; Unsolved 0.
  assert [row.rewards for row in rows] == [(1.0, 0.5), (0.0, 0.0)]
  assert rows[0].responses[0] == 'Thought: Ask the weather tool.\nAction: w\nAction Input: {"city": "Paris"}\n'
