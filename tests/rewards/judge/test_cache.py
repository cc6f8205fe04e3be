"""The on-disk cache of finished judge runs."""

import json
import os

import pytest

from steptool_jax.data.errors import DataError
from steptool_jax.data.records import AnswerStatus, JudgeRun
from steptool_jax.rewards.judge.cache import RunCache, request_key

RUN = JudgeRun((1, 0), (5, 1), AnswerStatus.SOLVED)
BODY = {"model": "judge", "messages": [{"role": "user", "content": "prompt"}]}


def test_runs_survive_a_reopen_and_are_keyed_by_run(tmp_path):
  path = tmp_path / "cache.jsonl"
  key = request_key("7", BODY)
  with RunCache(path) as cache:
    cache.put(key, 1, "7", RUN)
  with RunCache(path) as cache:
    assert cache.get(key, 1) == RUN and cache.get(key, 0) is None and len(cache) == 1
  assert json.loads(path.read_text()) == {
      "key": key, "run": 1, "query_id": "7", "succeed_tool_calling": [1, 0],
      "contribution_to_final_answer": [5, 1], "final_answer_status": "Solved"}


def test_the_key_changes_with_the_question():
  key = request_key("7", BODY)
  assert request_key("8", BODY) != key
  assert request_key("7", {**BODY, "model": "other"}) != key
  assert request_key("7", {**BODY, "messages": [{"role": "user", "content": "prompt, edited"}]}) != key
  assert request_key("7", dict(reversed(list(BODY.items())))) == key  # key order is not content


def test_a_torn_last_line_is_skipped_and_not_glued_to_the_next(tmp_path):
  path = tmp_path / "cache.jsonl"
  key = request_key("7", BODY)
  with RunCache(path) as cache:
    cache.put(key, 0, "7", RUN)
  with open(path, "a", encoding="utf-8") as f:
    f.write('{"key": "' + key + '", "run": 1, "query_id": "7", "succ')  # killed mid-write
  with RunCache(path) as cache:
    assert cache.unreadable_lines == 1 and len(cache) == 1
    cache.put(key, 1, "7", RUN)
  with RunCache(path) as cache:
    assert cache.unreadable_lines == 1 and cache.get(key, 0) == RUN and cache.get(key, 1) == RUN


def test_lines_with_invalid_runs_are_not_trusted(tmp_path):
  path = tmp_path / "cache.jsonl"
  good = {"key": "k", "run": 0, "query_id": "7", "succeed_tool_calling": [1],
          "contribution_to_final_answer": [3], "final_answer_status": "Unsure"}
  lines = [good, {**good, "run": 1, "contribution_to_final_answer": [9]}, {**good, "run": "2"},
           {**good, "run": 3, "contribution_to_final_answer": [3, 3]}]
  path.write_text("".join(json.dumps(line) + "\n" for line in lines) + "not json\n", encoding="utf-8")
  with RunCache(path) as cache:
    assert cache.unreadable_lines == 4 and cache.get("k", 0) == JudgeRun((1,), (3,), AnswerStatus.UNSURE)


def test_no_path_keeps_runs_in_memory(tmp_path):
  with RunCache(None) as cache:
    cache.put("k", 0, "7", RUN)
    assert cache.get("k", 0) == RUN
  assert list(tmp_path.iterdir()) == []


def test_hostile_lines_are_counted_not_fatal(tmp_path):
  path = tmp_path / "cache.jsonl"
  key = request_key("7", BODY)
  with RunCache(path) as cache:
    cache.put(key, 0, "7", RUN)
  good = json.loads(path.read_text())
  with open(path, "a", encoding="utf-8") as f:
    f.write(json.dumps({**good, "run": True}) + "\n")  # a bool is not run 1
    f.write("[" * 5000 + "]" * 5000 + "\n")  # deeper than json.loads recurses
    f.write('{"key": "k", "run": ' + "9" * 5000 + "}\n")  # more digits than Python converts
  with RunCache(path) as cache:
    assert cache.unreadable_lines == 3 and len(cache) == 1 and cache.get(key, 1) is None


def test_a_fifo_as_cache_is_refused_without_blocking(tmp_path):
  path = tmp_path / "cache.jsonl"
  os.mkfifo(path)
  with pytest.raises(DataError, match="found a FIFO"):
    RunCache(path)
