"""Judging many trajectories: bounded concurrency, cache reuse, results in input order."""

import dataclasses
import threading
import time

import pytest

from steptool_jax.data.records import AnswerStatus, ToolCall, Trajectory
from steptool_jax.rewards.judge.annotator import judge_trajectories
from steptool_jax.rewards.judge.client import JudgeRefusedError
from steptool_jax.rewards.judge.settings import JudgeSettings
from tests.rewards.judge.loopback import LoopbackJudge, Reply, error, evaluation, prompt_of, steps_in_prompt

KEY = "sk-test-annotator"


def trajectories(n):
  """Trajectory k has k % 3 calls, so prompts and list lengths differ."""
  finish = ToolCall("Finish", '{"return_type": "give_answer", "final_answer": "done"}')
  return [Trajectory(str(k), f"task number {k}", (), (ToolCall("tool", f'{{"k": {k}}}', "ok"),) * (k % 3), finish)
          for k in range(n)]


def by_task_number(request):
  """SuccCalling 1 and Contribution = k % 6 on every step of task k; Solved for even k."""
  k = int(prompt_of(request.body).split("task number ")[1].split()[0])
  n = steps_in_prompt(request.body)
  return evaluation([1] * n, [k % 6] * n, "Solved" if k % 2 == 0 else "Unsolved")


@pytest.fixture(autouse=True)
def key(monkeypatch):
  monkeypatch.setenv("OPENAI_API_KEY", KEY)


def test_at_most_concurrency_requests_are_in_flight():
  in_flight, peak, lock = [0], [0], threading.Lock()

  def counting(request):
    with lock:
      in_flight[0] += 1
      peak[0] = max(peak[0], in_flight[0])
    reply = by_task_number(request)
    threading.Event().wait(0.05)
    with lock:
      in_flight[0] -= 1
    return reply

  with LoopbackJudge(counting) as judge:
    results, summary = judge_trajectories(trajectories(12), JudgeSettings(model="m", base_url=judge.url, runs=2,
                                                                          concurrency=3))
  assert peak[0] == 3 and len(judge.requests) == 24 == summary.requests
  assert summary.annotated == 12 and summary.failed == {}


def test_results_follow_the_input_order_and_the_cache_answers_a_rerun(tmp_path):
  settings = JudgeSettings(model="m", runs=2, concurrency=4, cache_path=str(tmp_path / "cache.jsonl"))
  with LoopbackJudge(by_task_number) as judge:
    settings = dataclasses.replace(settings, base_url=judge.url)
    results, summary = judge_trajectories(trajectories(7), settings)
    for k, runs in enumerate(results):
      assert len(runs) == 2
      for run in runs:
        assert run.contributions == (k % 6,) * (k % 3)
        assert run.status is (AnswerStatus.SOLVED if k % 2 == 0 else AnswerStatus.UNSOLVED)
    again, summary = judge_trajectories(trajectories(7), settings)
  assert again == results and len(judge.requests) == 14
  assert summary.runs_from_cache == 14 and summary.runs_asked == 0 and summary.annotated == 7
  # One more run per trajectory asks only for the new run.
  with LoopbackJudge(by_task_number) as judge:
    _, summary = judge_trajectories(trajectories(7), dataclasses.replace(settings, base_url=judge.url, runs=3))
  assert len(judge.requests) == 7 and summary.runs_from_cache == 14


def test_a_refusal_stops_the_run_and_keeps_what_finished(tmp_path):
  def refuse_task_5(request):
    return error(401) if "task number 5" in prompt_of(request.body) else by_task_number(request)

  cache = tmp_path / "cache.jsonl"
  with LoopbackJudge(refuse_task_5) as judge:
    with pytest.raises(JudgeRefusedError, match="refused the key in OPENAI_API_KEY"):
      judge_trajectories(trajectories(6), JudgeSettings(model="m", base_url=judge.url, runs=1, concurrency=1,
                                                        cache_path=str(cache)))
  assert len(cache.read_text().splitlines()) == 5  # tasks 0-4, asked one at a time before task 5


def test_a_refusal_does_not_wait_for_slow_requests_in_flight():
  def refuse_task_0(request):
    return error(403) if "task number 0" in prompt_of(request.body) else Reply(body={}, delay=5.0)

  with LoopbackJudge(refuse_task_0) as judge:
    start = time.monotonic()
    with pytest.raises(JudgeRefusedError, match="HTTP 403"):
      judge_trajectories(trajectories(4), JudgeSettings(model="m", base_url=judge.url, runs=1, concurrency=4))
    assert time.monotonic() - start < 2.5  # not the 5 s the requests still in flight take
