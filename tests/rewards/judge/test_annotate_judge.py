"""`python -m steptool_jax.annotate --method=judge` against a scripted judge on loopback."""

import collections
import itertools
import json
import logging
import os
import pathlib
import subprocess
import sys
import threading
import time

import pytest

from steptool_jax import annotate
from steptool_jax.data.annotations import read_reward_annotations
from steptool_jax.data.records import ToolCall, Trajectory
from steptool_jax.data.toolbench import write_converted_answers
from steptool_jax.data.tsv import read_step_grained_tsv
from tests.rewards.judge.loopback import LoopbackJudge, Reply, error, evaluation, prompt_of, steps_in_prompt, \
    tool_call_completion

KEY = "sk-test-DO-NOT-LEAK-7f3a9c"
REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]
FINISH = ToolCall("Finish", '{"return_type": "give_answer", "final_answer": "done"}')


def task(k, calls=2, finish=FINISH):
  return Trajectory(str(k), f"task number {k} please", (), tuple(ToolCall("tool", f'{{"k": {k}}}', "ok")
                                                                for _ in range(calls)), finish)


def task_number(request):
  return int(prompt_of(request.body).split("task number ")[1].split()[0])


def per_task(script):
  """Gives `script(k, i)` the task number and how many requests that task had before."""
  counters, lock = collections.defaultdict(itertools.count), threading.Lock()

  def wrapped(request):
    k = task_number(request)
    with lock:
      i = next(counters[k])
    return script(k, i, steps_in_prompt(request.body))
  return wrapped


@pytest.fixture(autouse=True)
def key(monkeypatch):
  monkeypatch.setenv("OPENAI_API_KEY", KEY)


def run_cli(capsys, answers, out, judge, *extra):
  code = annotate.main([f"--input={answers}", f"--output={out}", "--template=toolllama", "--method=judge",
                        f"--judge-base-url={judge.url}", "--judge-model=judge-test", "--judge-backoff=0.01",
                        *map(str, extra)])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def test_three_runs_are_averaged_by_the_paper_formula(tmp_path, capsys):
  answers = tmp_path / "answers.json"
  write_converted_answers(answers, [task(1), task(2, finish=None)])
  runs = [([1, 0], [5, 2], "Solved"), ([1, 1], [3, 0], "Unsure"), ([0, 0], [0, 1], "Unsolved")]
  with LoopbackJudge(per_task(lambda k, i, n: evaluation(*runs[i]))) as judge:
    code, stdout, _ = run_cli(capsys, answers, tmp_path / "out.tsv", judge, "--judge-runs=3", "--concurrency=3")
  assert code == 0 and json.loads(stdout)["judge"]["annotated"] == 2
  rows = read_step_grained_tsv(tmp_path / "out.tsv")
  # Step 1: ((1 + 5/5)/2 + (1 + 3/5)/2 + (0 + 0)/2) / 3 = (1 + 0.8 + 0) / 3 = 0.6
  # Step 2: ((0 + 2/5)/2 + (1 + 0)/2 + (0 + 1/5)/2) / 3 = (0.2 + 0.5 + 0.1) / 3 = 0.8 / 3
  # Final:  (Solved 1 + Unsure 0.5 + Unsolved 0) / 3 = 0.5; a trajectory without Finish has none.
  assert rows[0].rewards == pytest.approx((0.6, 0.8 / 3, 0.5))
  assert rows[1].rewards == pytest.approx((0.6, 0.8 / 3))
  assert len(judge.requests) == 6


def test_reference_answers_with_the_reference_judgements_give_the_published_rewards(reference_dir, tmp_path, capsys):
  """Done-when: the converted answers through the loopback judge into a TSV the reader accepts."""
  annotations = read_reward_annotations(reference_dir / "reward_annotation_G123.json")
  counters, lock = collections.defaultdict(itertools.count), threading.Lock()

  def replay(request):  # answers as the paper's judge did, run by run
    [annotation] = [a for a in annotations if a.query in prompt_of(request.body)]
    assert steps_in_prompt(request.body) == len(annotation.calls)
    with lock:
      run = annotation.runs[next(counters[annotation.query_id])]
    return evaluation(run.succeed_tool_calling, run.contributions, run.status.value)

  out = tmp_path / "out.tsv"
  with LoopbackJudge(replay) as judge:
    code, stdout, _ = run_cli(capsys, reference_dir / "converted_answers_G123.json", out, judge)
  assert code == 0 and json.loads(stdout)["rows"] == 5 and len(judge.requests) == 15
  rows = read_step_grained_tsv(out)
  assert [row.num_steps for row in rows] == [5, 3, 2, 3, 3]
  assert rows[2].rewards == pytest.approx((1.0, 5 / 6))  # 44426, worked out in tests/rewards/test_shaping.py
  assert rows[4].rewards == pytest.approx((4 / 30, 13 / 30, 1 / 3))  # 56543
  assert rows[2].responses[0] == 'Action: team_roster_for_national_football_players\nAction Input: {"team":"NE"}\n'


def test_failures_are_summarised_with_reasons_and_left_out(tmp_path, capsys):
  answers = tmp_path / "answers.json"
  write_converted_answers(answers, [task(k) for k in range(6)] + [task(6, calls=0, finish=None)])
  good = evaluation([1, 1], [5, 5], "Solved")

  def script(k, i, n):
    return [good,                                                      # 0: fine
            error(429, headers={"Retry-After": "0"}) if i == 0 else good,  # 1: rate limited once
            evaluation([1, 1, 1], [5, 5, 5], "Solved"),                # 2: always three entries for two steps
            error(500, "model overloaded"),                            # 3: always 500
            Reply(body=good.body, delay=3.0) if i == 0 else good,      # 4: times out once
            error(400, "prompt too long")][k]                          # 5: rejected
  out = tmp_path / "out.tsv"
  with LoopbackJudge(per_task(script)) as judge:
    code, stdout, stderr = run_cli(capsys, answers, out, judge, "--judge-runs=1", "--judge-retries=2",
                                   "--judge-timeout=1")
  assert code == annotate.EXIT_SOME_FAILED == 3  # the output is written, but not every trajectory is in it
  assert "error: the judge failed on 3 trajectories" in stderr
  counts = json.loads(stdout)
  assert counts["rows"] == 3 and counts["empty_trajectories"] == 1
  summary = counts["judge"]
  assert (summary["trajectories"], summary["annotated"], summary["failed"]) == (6, 3, 3)
  assert summary["requests"] == 1 + 2 + 3 + 3 + 2 + 1 == len(judge.requests)  # task 6 was never asked
  assert summary["retried_by_reason"] == {"HTTP 429": 1, "HTTP 500": 2, "invalid output": 2, "timeout": 1}
  assert summary["failures"] == {
      "2": ["run 0: invalid output: succeed_tool_calling: expected 2 entries (one per intermediate step), found 3"
            " (after 3 attempts)"],
      "3": ["run 0: HTTP 500: model overloaded (after 3 attempts)"],
      "5": ["run 0: HTTP 400: prompt too long (not retried)"]}
  assert "judge: 6 trajectories: 3 annotated, 3 failed" in stderr
  assert "judge: failed 3: run 0: HTTP 500: model overloaded (after 3 attempts)" in stderr
  assert [row.rewards for row in read_step_grained_tsv(out)] == [(1.0, 1.0, 1.0)] * 3


def test_the_key_is_sent_but_never_printed_logged_or_stored(tmp_path, capsys, caplog):
  caplog.set_level(logging.DEBUG)  # every library logger, the HTTP client's included
  answers = tmp_path / "answers.json"
  write_converted_answers(answers, [task(k) for k in range(3)])

  def script(k, i, n):
    if k == 0 and i == 0:
      return error(429, headers={"Retry-After": "0"})
    if k == 1 and i == 0:
      return error(500, f"upstream said: {KEY}")
    return evaluation([1] * n, [5] * n, "Solved")
  out = tmp_path / "out.tsv"
  with LoopbackJudge(per_task(script)) as judge:
    code, stdout, stderr = run_cli(capsys, answers, out, judge, "--judge-runs=1", "--judge-retries=0")
  # Tasks 0 and 1 fail without retries: exit 3, the others written.
  assert code == 3 and {r.headers["authorization"] for r in judge.requests} == {f"Bearer {KEY}"}
  assert "api_key_env=OPENAI_API_KEY" in stderr  # the resolved settings name the variable only
  assert any(r.name.startswith(("openai", "httpx")) for r in caplog.records)  # logging was on
  logs = "\n".join(record.getMessage() for record in caplog.records)
  files = [p.read_text(encoding="utf-8") for p in tmp_path.iterdir() if p.is_file()]
  assert len(files) == 3  # answers, TSV, cache
  for text in (stdout, stderr, logs, *files):
    assert KEY not in text and KEY[8:] not in text


def test_a_killed_run_resumes_without_asking_finished_trajectories_again(tmp_path, capsys):
  answers, out = tmp_path / "answers.json", tmp_path / "out.tsv"
  cache = tmp_path / "out.tsv.judge-cache.jsonl"  # the default, beside the output
  write_converted_answers(answers, [task(k, calls=k % 3) for k in range(8)])
  released, answered, lock = threading.Event(), [0], threading.Lock()

  def by_task(request):
    k, steps = task_number(request), steps_in_prompt(request.body)
    return evaluation([1] * steps, [k % 6] * steps, "Solved")

  def stall_after_six(request):
    with lock:
      answered[0] += 1
      stall = answered[0] > 6
    if stall:
      released.wait(30)  # in flight when the process dies
    return by_task(request)

  argv = [f"--input={answers}", f"--output={out}", "--template=toolllama", "--method=judge",
          "--judge-model=judge-test", "--judge-runs=2", "--concurrency=2"]
  with LoopbackJudge(stall_after_six) as judge:
    process = subprocess.Popen([sys.executable, "-m", "steptool_jax.annotate", *argv, f"--judge-base-url={judge.url}"],
                               cwd=REPO_ROOT, env={**os.environ, "OPENAI_API_KEY": KEY},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    # Six whole lines cached and the next two requests arrived (they stall): kill it then.
    while not (cache.exists() and cache.read_text().count("\n") == 6 and len(judge.requests) == 8):
      assert process.poll() is None, process.stderr.read().decode()
      assert time.monotonic() < deadline, "the annotation run never cached six runs with two more in flight"
      time.sleep(0.02)
    process.kill()
    process.wait()
    process.stderr.close()
    released.set()
  assert not out.exists() and len(judge.requests) == 8  # six answered, two in flight
  cached = collections.Counter(json.loads(line)["query_id"] for line in cache.read_text().splitlines())
  finished = {query_id for query_id, runs in cached.items() if runs == 2}
  assert finished  # at least one trajectory had both runs answered
  with open(cache, "a", encoding="utf-8") as f:
    f.write('{"key": "0f3')  # a record torn by a kill mid-write

  with LoopbackJudge(by_task) as judge:
    code, stdout, _ = run_cli(capsys, answers, out, judge, "--judge-runs=2", "--concurrency=2")
  asked = collections.Counter(str(task_number(request)) for request in judge.requests)
  assert not finished & set(asked)
  assert len(judge.requests) == 16 - 6 and all(asked[q] == 2 - cached[q] for q in asked)
  summary = json.loads(stdout)["judge"]
  assert (summary["runs_from_cache"], summary["unreadable_cache_lines"], summary["annotated"]) == (6, 1, 8)
  rows = read_step_grained_tsv(out)
  assert [row.rewards for row in rows] == [tuple([(1 + (k % 6) / 5) / 2] * (k % 3)) + (1.0,) for k in range(8)]


def test_configuration_mistakes_exit_2_with_the_flag_named(tmp_path, capsys, monkeypatch):
  answers = tmp_path / "answers.json"
  write_converted_answers(answers, [task(0)])
  with LoopbackJudge() as judge:
    code = annotate.main([f"--input={answers}", f"--output={tmp_path / 'out.tsv'}", "--template=toolllama",
                          "--method=judge", f"--judge-base-url={judge.url}"])
    assert code == 2 and "judge_model: --method=judge needs --judge-model=NAME" in capsys.readouterr().err
    monkeypatch.delenv("OPENAI_API_KEY")
    code, _, stderr = run_cli(capsys, answers, tmp_path / "out.tsv", judge)
    assert code == 2 and "the environment variable OPENAI_API_KEY is not set" in stderr
    monkeypatch.setenv("MY_JUDGE_KEY", KEY)
    code, _, stderr = run_cli(capsys, answers, tmp_path / "out.tsv", judge, "--judge-api-key-env=MY_JUDGE_KEY")
    assert code == 0 and {r.headers["authorization"] for r in judge.requests} == {f"Bearer {KEY}"}
  assert not (tmp_path / "out.tsv.partial").exists()
