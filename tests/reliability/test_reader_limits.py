"""The faults of issue 18 one by one: each gives records or one clean DataError (exit 2).

FIFOs and devices, 10,000 levels of nesting, converted answers of thousands of steps,
integers of thousands of digits, repeated keys, bools as scores, and the peak memory of a
5 MB cell (measured in a child process, whose peak RSS is the honest number).
"""

import json
import os
import resource
import subprocess
import sys

import pytest

from steptool_jax.data import __main__ as data_cli
from steptool_jax.data.annotations import read_reward_annotations
from steptool_jax.data.errors import DataError
from steptool_jax.data.formats import READERS
from steptool_jax.data.records import ToolCall, ToolSpec, Trajectory
from steptool_jax.data.sft import read_sft_conversations
from steptool_jax.data.toolbench import read_converted_answers, write_converted_answers
from steptool_jax.data.tsv import read_step_grained_tsv

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
JSON_READERS = {"converted_answers": read_converted_answers, "annotations": read_reward_annotations,
                "sft": read_sft_conversations}


def _stats(capsys, path, *flags):
  code = data_cli.main(["stats", str(path), *flags])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def _annotation(**overrides):
  record = {"query": "q", "tool_names": ["t", "Finish"],
            "answer_steps": ["Step 1: {'name': 't', 'arguments': '{}', 'response': 'r'}"],
            "final_step": "Final step: {'name': 'Finish', 'arguments': '{}', 'response': ''}",
            "process_reward": {"0": {"succeed_tool_calling": [1], "contributions": [5]}},
            "is_solved": {"0": "Solved"}}
  record.update(overrides)
  return record


@pytest.mark.parametrize("fmt", sorted(READERS))
def test_fifo_and_devices_are_refused_by_every_reader(tmp_path, capsys, fmt):
  fifo = tmp_path / "pipe"
  os.mkfifo(fifo)
  for path, kind in ((fifo, "a FIFO"), ("/dev/zero", "a character device"), ("/dev/urandom", "a character device")):
    with pytest.raises(DataError, match=f"file: expected a regular file .*, found {kind}"):
      list(READERS[fmt](path))
    code, out, err = _stats(capsys, path, f"--format={fmt}")
    assert (code, out) == (2, "") and err.count("\n") == 1 and kind in err


@pytest.mark.parametrize("fmt", sorted(JSON_READERS))
def test_ten_thousand_levels_of_nesting_are_a_record_error(tmp_path, capsys, fmt):
  path = tmp_path / "deep.json"
  path.write_text('{"7": ' + "[" * 10_000 + "]" * 10_000 + "}")
  with pytest.raises(DataError) as info:
    JSON_READERS[fmt](path)
  assert info.value.row == "7" and "found list [[[[" in info.value.message
  code, _, err = _stats(capsys, path, f"--format={fmt}")
  assert code == 2 and err.startswith(f"{path}:7: ") and err.count("\n") == 1


def test_nesting_deeper_than_the_cap_is_a_file_error(tmp_path, capsys):
  from steptool_jax.data.jsonio import MAX_JSON_DEPTH
  path = tmp_path / "deeper.json"
  depth = MAX_JSON_DEPTH + 1
  path.write_text('{"7": ' + "[" * depth + "]" * depth + "}")
  code, _, err = _stats(capsys, path, "--format=sft")
  assert code == 2 and err == f"{path}: file: expected SFT conversations (query id -> {{cnt, instances: [{{id," \
                              f" conversations}}]}}), found nesting deeper than {MAX_JSON_DEPTH:,} levels at line 1," \
                              f" column {depth + 5}\n"  # the `[` that opens level MAX_JSON_DEPTH + 1


@pytest.mark.parametrize("steps", [300, 3000])
def test_converted_answers_of_thousands_of_steps_write_and_read_back(tmp_path, steps):
  calls = tuple(ToolCall("t", json.dumps({"i": i}), f"response {i}", thought=f"thought {i}") for i in range(steps))
  trajectory = Trajectory("1", "q", (ToolSpec("t"), ToolSpec("Finish")), calls,
                          ToolCall("Finish", json.dumps({"return_type": "give_answer", "final_answer": "a"})), "m")
  path = tmp_path / "answers.json"
  assert write_converted_answers(path, [trajectory]) == 1
  assert read_converted_answers(path) == [trajectory]
  # Linear in the steps: the indentation stops at INDENT_DEPTH instead of growing with the chain.
  assert path.stat().st_size < 20_000 * steps


def test_a_failed_write_leaves_the_previous_file(tmp_path):
  path = tmp_path / "answers.json"
  good = Trajectory("1", "q", (), (ToolCall("t", "{}", "r"),), ToolCall("Finish", "{}"))
  write_converted_answers(path, [good])
  before = path.read_bytes()
  with pytest.raises(ValueError, match="duplicate query id"):
    write_converted_answers(path, [good, good])
  assert path.read_bytes() == before and os.listdir(tmp_path) == ["answers.json"]


def test_step_number_of_thousands_of_digits(tmp_path):
  path = tmp_path / "ann.json"
  steps = ["Step " + "1" * 5000 + ": {'name': 't', 'arguments': '{}', 'response': 'r'}"]
  path.write_text(json.dumps({"5": _annotation(answer_steps=steps)}))
  with pytest.raises(DataError, match=r"ann.json:5: answer_steps\[0\]: expected step number 1, found a number of 5,0"):
    read_reward_annotations(path)


def test_integers_of_thousands_of_digits_in_json_and_tsv(tmp_path):
  path = tmp_path / "ann.json"
  path.write_text('{"5": {"answer_steps": [], "process_reward": {"0": ' + "9" * 5000 + "}}}")
  with pytest.raises(DataError, match="ann.json: file: expected judge reward annotations.*found a number JSON cannot"):
    read_reward_annotations(path)
  tsv = tmp_path / "rows.tsv"
  tsv.write_text("prompt\tresponse\treward\n['p']\t['a']\t[" + "9" * 400 + "]\n")
  with pytest.raises(DataError, match=r"rows.tsv:1: reward\[0\]: expected a finite number, found an integer too large"):
    read_step_grained_tsv(tsv)
  tsv.write_text("prompt\tresponse\treward\n['p']\t['a']\t[" + "9" * 5000 + "]\n")
  with pytest.raises(DataError, match=r"rows.tsv:1: reward: expected a Python-literal list"):
    read_step_grained_tsv(tsv)


def test_repeated_query_id_is_an_error_not_a_lost_record(tmp_path, capsys):
  path = tmp_path / "ann.json"
  record = json.dumps(_annotation())
  path.write_text(f'{{"5": {record}, "6": {record}, "5": {record}}}')
  with pytest.raises(DataError, match=r"ann.json:5: query id: expected each query id once, found it 2 times"):
    read_reward_annotations(path)
  assert [a.query_id for a in read_reward_annotations(path, skip_invalid=True)] == ["6"]
  code, out, err = _stats(capsys, path, "--skip-invalid")
  assert code == 0 and json.loads(out)["invalid_rows"] == 1 and err.startswith(f"{path}:5: query id:")


def test_run_keys_0_and_00_are_not_one_run_silently(tmp_path):
  path = tmp_path / "ann.json"
  runs = {"0": {"succeed_tool_calling": [1], "contributions": [5]},
          "00": {"succeed_tool_calling": [0], "contributions": [0]}}
  path.write_text(json.dumps({"5": _annotation(process_reward=runs)}))
  with pytest.raises(DataError, match=r"ann.json:5: process_reward.00: expected a judge-run number as key"):
    read_reward_annotations(path)


def test_repeated_key_inside_a_record_names_its_path(tmp_path):
  path = tmp_path / "ann.json"
  text = json.dumps({"5": _annotation()}).replace('"contributions": [5]', '"contributions": [5], "contributions": [0]')
  path.write_text(text)
  with pytest.raises(DataError, match=r"ann.json:5: process_reward.0.contributions: expected each key once"):
    read_reward_annotations(path)


def test_repeated_key_inside_a_step_literal(tmp_path):
  path = tmp_path / "ann.json"
  steps = ["Step 1: {'name': 't', 'arguments': '{}', 'name': 'other', 'response': 'r'}"]
  path.write_text(json.dumps({"5": _annotation(answer_steps=steps)}))
  with pytest.raises(DataError, match=r"answer_steps\[0\]: expected a Python-literal dict .*key str 'name' twice"):
    read_reward_annotations(path)


@pytest.mark.parametrize("field", ["succeed_tool_calling", "contributions"])
def test_bools_are_not_scores(tmp_path, field):
  scores = {"succeed_tool_calling": [1], "contributions": [5]}
  scores[field] = [True]
  path = tmp_path / "ann.json"
  path.write_text(json.dumps({"5": _annotation(process_reward={"0": scores})}))
  with pytest.raises(DataError, match=rf"process_reward.0.{field}\[0\]: expected an integer 0..\d, found bool True"):
    read_reward_annotations(path)


def test_bool_is_not_a_reward(tmp_path):
  path = tmp_path / "rows.tsv"
  path.write_text("prompt\tresponse\treward\n['p']\t['a']\t[True]\n")
  with pytest.raises(DataError, match=r"rows.tsv:1: reward\[0\]: expected a number, found bool True"):
    read_step_grained_tsv(path)


def _child_peak(path):
  """Exit status, stderr and peak RSS (MiB) of `python -m steptool_jax.data stats path` in a child."""
  script = ("import resource, subprocess, sys; r = subprocess.run([sys.executable, '-m', 'steptool_jax.data', 'stats',"
            " sys.argv[1]], capture_output=True, text=True); print(r.returncode); print(r.stderr.strip());"
            " print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
  result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=300, check=True)
  code, err, peak = result.stdout.strip().split("\n")
  return int(code), err, float(peak)


def test_peak_memory_of_a_5_mb_reward_cell_is_bounded(tmp_path):
  path = tmp_path / "rows.tsv"
  cell = "[" + ", ".join(["0.5"] * 1_000_000) + "]"  # 5 MB; ast.literal_eval peaked at 1.1 GB on it
  path.write_text(f"prompt\tresponse\treward\n['p']\t['a']\t{cell}\n")
  code, err, peak = _child_peak(path)
  assert code == 2 and err == f"{path}:1: reward: expected prompt, response and reward lists of equal length" \
                              " (one entry per step), found 1, 1, 1000000"
  assert peak < 300, f"peak RSS {peak:.0f} MiB"


def test_a_cell_over_the_cap_stops_at_the_cap(tmp_path):
  from steptool_jax.data.tsv import MAX_CELL_CHARS
  path = tmp_path / "rows.tsv"
  with open(path, "w") as f:
    f.write("prompt\tresponse\treward\n['p']\t['a']\t[")
    f.write("0.5, " * (MAX_CELL_CHARS // 5 + 1))
    f.write("0.5]\n")
  code, err, peak = _child_peak(path)
  assert code == 2 and err == f"{path}:1: row: expected cells of at most {MAX_CELL_CHARS:,} characters, found a" \
                              " longer one (the rest is not read)"
  assert peak < 8 * path.stat().st_size / 2**20 + 100, f"peak RSS {peak:.0f} MiB"


def test_repeated_tsv_column_is_an_error_not_a_guess(tmp_path):
  path = tmp_path / "rows.tsv"
  path.write_text("prompt\tresponse\treward\treward\n['p']\t['a']\t[1.0]\t[0.0]\n")
  with pytest.raises(DataError, match=r"rows.tsv: reward: expected one column named 'reward' in the header, found 2"):
    read_step_grained_tsv(path)


def test_tasks_file_reader_is_total_and_strict(tmp_path):
  from steptool_jax.envs.tasks import generate_tasks, read_tasks
  tasks = generate_tasks(10, 0)["train"][:3]
  lines = [json.dumps(task.to_json()) for task in tasks]
  path = tmp_path / "tasks.jsonl"
  path.write_text("\n".join(lines) + "\n")
  assert read_tasks(path) == list(tasks)  # what generate writes, read back whole
  cases = {
      lines[0] + "\n" + lines[0]: (2, "task_id", "expected each task id once"),
      lines[0].replace('"split": "train"', '"split": "train", "split": "test"'): (1, "split", "expected each key once"),
      lines[0].replace('"gold_facts": [', '"gold_facts": [true, '): (1, "gold_facts", "expected a list of str"),
      lines[0].replace('"template": "', '"template": "no_such_'): (1, "template", "expected one of"),
      "[" * 10_000 + "]" * 10_000: (1, "line", "nesting deeper than 64 levels"),
      lines[0][:-5]: (1, "line", "expected a JSON object, found"),
  }
  for text, (row, field, words) in cases.items():
    path.write_text(text)
    with pytest.raises(DataError) as info:
      read_tasks(path)
    assert (info.value.row, info.value.field) == (row, field) and words in info.value.message, info.value
  os.remove(path)
  os.mkfifo(path)
  with pytest.raises(DataError, match="found a FIFO"):
    read_tasks(path)
