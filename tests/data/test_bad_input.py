"""Every kind of bad input gets a DataError naming file, row, field and what was expected."""

import json
import pathlib

import pytest

from steptool_jax.data import __main__ as data_cli
from steptool_jax.data.annotations import read_reward_annotations
from steptool_jax.data.errors import DataError
from steptool_jax.data.sft import read_sft_conversations
from steptool_jax.data.toolbench import read_converted_answers
from steptool_jax.data.tsv import read_step_grained_tsv

HEADER = "prompt\tresponse\treward\n"
GOOD = "['p0', 'p1']\t['a0', 'a1']\t[0.5, 1.0]\n"


def _tsv(tmp_path: pathlib.Path, *lines: str, header: str = HEADER) -> pathlib.Path:
  path = tmp_path / "rows.tsv"
  path.write_text(header + "".join(lines), encoding="utf-8")
  return path


# (data line, field, words the message must contain); the bad row is row 2, after a good one.
TSV_CASES = {
    "unparseable list literal": ("['p0', 'p1'\t['a0', 'a1']\t[0.5, 1.0]\n", "prompt", "Python-literal list"),
    "not a list": ("'p0'\t['a0']\t[0.5]\n", "prompt", "Python-literal list, found str"),
    "lists of different lengths": ("['p0', 'p1']\t['a0', 'a1']\t[0.5]\n", "reward", "equal length"),
    "empty lists": ("[]\t[]\t[]\n", "prompt", "non-empty list"),
    "non-numeric reward": ("['p0']\t['a0']\t['high']\n", "reward[0]", "expected a number, found str"),
    "NaN reward": ("['p0']\t['a0']\t[NaN]\n", "reward[0]", "finite number, found nan"),
    "infinite reward": ("['p0']\t['a0']\t[1e999]\n", "reward[0]", "finite number, found inf"),
    "empty action": ("['p0', 'p1']\t['a0', '']\t[0.5, 1.0]\n", "response[1]", "non-empty action"),
    "non-string prompt": ("[1, 'p1']\t['a0', 'a1']\t[0.5, 1.0]\n", "prompt[0]", "expected a string"),
    "missing cell": ("['p0']\t['a0']\n", "row", "3 tab-separated cells"),
}


@pytest.mark.parametrize("case", sorted(TSV_CASES))
def test_bad_tsv_rows(tmp_path, case):
  line, field, words = TSV_CASES[case]
  path = _tsv(tmp_path, GOOD, line)
  with pytest.raises(DataError) as info:
    read_step_grained_tsv(path)
  error = info.value
  assert (error.path, error.row, error.field) == (str(path), 2, field)
  assert words in error.message
  assert str(error).startswith(f"{path}:2: {field}: expected")


def test_skip_invalid_counts_bad_rows_and_keeps_good_ones(tmp_path):
  path = _tsv(tmp_path, GOOD, TSV_CASES["empty lists"][0], GOOD, TSV_CASES["NaN reward"][0])
  errors = []
  rows = read_step_grained_tsv(path, skip_invalid=True, errors=errors)
  assert len(rows) == 2
  assert [(e.row, e.field) for e in errors] == [(2, "prompt"), (4, "reward[0]")]


def test_missing_column(tmp_path):
  path = _tsv(tmp_path, "['p']\t['a']\n", header="prompt\tresponse\n")
  with pytest.raises(DataError, match=r"rows.tsv: reward: expected a column named 'reward'"):
    read_step_grained_tsv(path)


def test_wrong_delimiter(tmp_path):
  path = tmp_path / "rows.csv"
  path.write_text("prompt,response,reward\n\"['p']\",\"['a']\",[1.0]\n", encoding="utf-8")
  with pytest.raises(DataError, match=r"header: expected tab-separated columns .*delimiter"):
    read_step_grained_tsv(path)


def test_data_is_never_executed(tmp_path):
  marker = tmp_path / "executed"
  payload = f"__import__('pathlib').Path({str(marker)!r}).touch()"
  path = _tsv(tmp_path, f"[{payload}]\t['a']\t[1.0]\n")
  with pytest.raises(DataError, match="prompt: expected a Python-literal list"):
    read_step_grained_tsv(path)
  assert not marker.exists()


READERS = {
    "tsv": read_step_grained_tsv,
    "converted_answers": read_converted_answers,
    "annotations": read_reward_annotations,
    "sft": read_sft_conversations,
}


@pytest.mark.parametrize("fmt", sorted(READERS))
def test_not_utf8(tmp_path, fmt):
  path = tmp_path / "latin1.txt"
  path.write_bytes(HEADER.encode() + "['café']\t['a']\t[1.0]\n".encode("latin-1"))
  with pytest.raises(DataError, match=r"latin1.txt: file: expected UTF-8 text, found byte 0xe9 at line 2"):
    READERS[fmt](path)


@pytest.mark.parametrize("fmt", sorted(READERS))
def test_empty_file(tmp_path, fmt):
  path = tmp_path / "empty"
  path.write_text("\n", encoding="utf-8")
  with pytest.raises(DataError, match=r"empty: file: expected .*, found an empty file"):
    READERS[fmt](path)


@pytest.mark.parametrize("fmt", ["converted_answers", "annotations", "sft"])
def test_json_that_is_not_an_object(tmp_path, fmt):
  path = tmp_path / "list.json"
  path.write_text("[1, 2]", encoding="utf-8")
  with pytest.raises(DataError, match=r"file: expected .*JSON object keyed by query id.*found list"):
    READERS[fmt](path)


def _annotation(**overrides):
  record = {
      "query": "q", "tool_names": ["t", "Finish"],
      "answer_steps": ["Step 1: {'name': 't', 'arguments': '{}', 'response': 'r'}",
                       "Step 2: {'name': 't', 'arguments': '{}', 'response': 'r'}"],
      "final_step": "Final step: {'name': 'Finish', 'arguments': '{}', 'response': ''}",
      "process_reward": {"0": {"succeed_tool_calling": [1, 0], "contributions": [5, 0]},
                         "1": {"succeed_tool_calling": [1, 1], "contributions": [4, 2]}},
      "is_solved": {"0": "AnswerStatus.Solved", "1": "AnswerStatus.Unsure"},
  }
  record.update(overrides)
  return record


ANNOTATION_CASES = {
    "runs disagree in step count": (
        {"process_reward": {"0": {"succeed_tool_calling": [1, 0], "contributions": [5, 0]},
                            "1": {"succeed_tool_calling": [1], "contributions": [4]}}},
        "process_reward.1.succeed_tool_calling", "expected 2 scores (one per answer step), found 1"),
    "unknown answer status": (
        {"is_solved": {"0": "AnswerStatus.Solved", "1": "Maybe"}}, "is_solved.1", "found 'Maybe'"),
    "status missing for a run": (
        {"is_solved": {"0": "Solved"}}, "is_solved.1", "expected a status for judge run 1"),
    "contribution out of range": (
        {"process_reward": {"0": {"succeed_tool_calling": [1, 0], "contributions": [5, 6]}}, "is_solved": {"0": "Solved"}},
        "process_reward.0.contributions[1]", "expected an integer 0..5, found int 6"),
    "step not a literal dict": (
        {"answer_steps": ["Step 1: {'name': 't'", "Step 2: {'name': 't'}"]}, "answer_steps[0]", "Python-literal dict"),
    "steps out of order": (
        {"answer_steps": ["Step 1: {'name': 't'}", "Step 3: {'name': 't'}"]}, "answer_steps[1]", "step number 2"),
}


@pytest.mark.parametrize("case", sorted(ANNOTATION_CASES))
def test_bad_annotations(tmp_path, case):
  overrides, field, words = ANNOTATION_CASES[case]
  path = tmp_path / "ann.json"
  path.write_text(json.dumps({"7": _annotation(), "8": _annotation(**overrides)}), encoding="utf-8")
  with pytest.raises(DataError) as info:
    read_reward_annotations(path)
  assert (info.value.row, info.value.field) == ("8", field)
  assert words in info.value.message
  assert len(read_reward_annotations(path, skip_invalid=True)) == 1


def _answer(details):
  return {"query": "q", "available_tools": [{"type": "function", "function": {"name": "t"}}],
          "answer": {"method": "m", "final_answer": "", "answer_details": details}}


def _node(role, message="", next_nodes=()):
  return {"role": role, "message": message, "next": list(next_nodes)}


def test_branching_answer_tree_is_rejected_not_guessed(tmp_path):
  call = {"name": "t", "arguments": "{}", "response": "r"}
  tree = [_node("system", "", [_node("user", "", [_node("tool", call), _node("tool", call)])])]
  path = tmp_path / "answers.json"
  path.write_text(json.dumps({"5": _answer(tree)}), encoding="utf-8")
  with pytest.raises(DataError) as info:
    read_converted_answers(path)
  assert info.value.row == "5"
  assert info.value.field == "answer.answer_details[0].next[0].next"
  assert "branching tree (2 children)" in info.value.message


def test_call_after_finish_is_rejected(tmp_path):
  finish = {"name": "Finish", "arguments": "{}", "response": ""}
  call = {"name": "t", "arguments": "{}", "response": "r"}
  tree = [_node("tool", finish, [_node("tool", call)])]
  path = tmp_path / "answers.json"
  path.write_text(json.dumps({"5": _answer(tree)}), encoding="utf-8")
  with pytest.raises(DataError, match=r"answer.answer_details\[0\].next\[0\]: expected Finish to be the last"):
    read_converted_answers(path)


def test_unknown_sft_role(tmp_path):
  path = tmp_path / "sft.json"
  turns = [{"from": "user", "value": "hi"}, {"from": "robot", "value": "x"}]
  path.write_text(json.dumps({"3": {"cnt": 1, "instances": [{"id": "i", "conversations": turns}]}}), encoding="utf-8")
  with pytest.raises(DataError, match=r"sft.json:3: instances\[0\].conversations\[1\].from: expected one of system"):
    read_sft_conversations(path)


@pytest.mark.parametrize("case", ["empty lists", "NaN reward", "unparseable list literal"])
def test_stats_cli_exits_2_with_path_row_field(tmp_path, capsys, case):
  line, field, _ = TSV_CASES[case]
  path = _tsv(tmp_path, GOOD, line)
  assert data_cli.main(["stats", str(path)]) == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  assert captured.err.startswith(f"{path}:2: {field}: expected")


def test_stats_cli_skip_invalid_reports_and_counts(tmp_path, capsys):
  path = _tsv(tmp_path, GOOD, TSV_CASES["empty lists"][0], GOOD)
  assert data_cli.main(["stats", str(path), "--skip-invalid"]) == 0
  captured = capsys.readouterr()
  stats = json.loads(captured.out)
  assert (stats["rows"], stats["invalid_rows"]) == (2, 1)
  assert captured.err.strip() == f"{path}:2: prompt: expected a non-empty list (one entry per step), found []"
