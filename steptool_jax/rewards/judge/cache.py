"""Finished judge runs on disk, so an interrupted annotation resumes where it stopped.

One JSON line per finished run, appended and flushed the moment the run is validated:

    {"key": "<sha256>", "run": 0, "query_id": "...", "succeed_tool_calling": [...],
     "contribution_to_final_answer": [...], "final_answer_status": "Solved"}

`key` hashes the query id together with the whole request body (model, prompt, function
schema, sampling settings), so a changed prompt template, model or trajectory is asked
again instead of reusing an answer to a different question. The API key and the base URL
are not part of the request body and never reach this file.

A process killed mid-write leaves at most one torn last line: it is counted and skipped
on load, and the next append starts on a fresh line. Lines are flushed, not fsynced: a
killed process loses nothing, a machine crash at worst the last few runs (asked again).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

from steptool_jax.data.files import read_regular_file
from steptool_jax.data.records import JudgeRun
from steptool_jax.rewards.judge.schema import JudgeOutputError, judge_run_from_arguments


def request_key(query_id: str, body: Mapping[str, Any]) -> str:
  """The cache key of a trajectory's judge request."""
  canonical = json.dumps({"query_id": query_id, "request": body}, sort_keys=True, ensure_ascii=False)
  return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def run_record(key: str, run: int, query_id: str, judge_run: JudgeRun) -> dict[str, Any]:
  return {"key": key, "run": run, "query_id": query_id,
          "succeed_tool_calling": list(judge_run.succeed_tool_calling),
          "contribution_to_final_answer": list(judge_run.contributions),
          "final_answer_status": judge_run.status.value}


class RunCache:
  """Judge runs by (request key, run index); appends to `path` (None: memory only).

  Attributes:
    unreadable_lines: lines of the existing file that could not be read back (a torn
      last line after a kill, or a hand-edited line), skipped.
  """

  def __init__(self, path: str | os.PathLike[str] | None):
    self.path = None if path is None else os.fspath(path)
    self.unreadable_lines = 0
    self._runs: dict[tuple[str, int], JudgeRun] = {}
    self._file = None
    if self.path is None:
      return
    needs_newline = False
    if os.path.exists(self.path):
      data = read_regular_file(self.path, expected="a judge cache (JSON lines)")  # a FIFO would block
      needs_newline = bool(data) and not data.endswith(b"\n")
      for line in data.decode("utf-8", errors="replace").splitlines():
        if line.strip():
          self._load_line(line)
    self._file = open(self.path, "a", encoding="utf-8")
    if needs_newline:
      self._file.write("\n")  # so the next record does not glue onto a torn line
      self._file.flush()

  def _load_line(self, line: str) -> None:
    try:
      record = json.loads(line)
      key, run = record["key"], record["run"]
      if not isinstance(key, str) or not isinstance(run, int) or isinstance(run, bool):
        raise TypeError(key, run)
      num_steps = len(record["succeed_tool_calling"])
      self._runs[(key, run)] = judge_run_from_arguments(record, num_steps)
    except (ValueError, KeyError, TypeError, RecursionError, JudgeOutputError):  # ValueError: JSON, huge integers
      self.unreadable_lines += 1

  def __len__(self) -> int:
    return len(self._runs)

  def get(self, key: str, run: int) -> JudgeRun | None:
    return self._runs.get((key, run))

  def put(self, key: str, run: int, query_id: str, judge_run: JudgeRun) -> None:
    self._runs[(key, run)] = judge_run
    if self._file is not None:
      self._file.write(json.dumps(run_record(key, run, query_id, judge_run), ensure_ascii=False) + "\n")
      self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None

  def __enter__(self) -> "RunCache":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
