"""One judge run against a real HTTP server on loopback: the request, retries, failures."""

import itertools
import json
import socket
import threading

import pytest

from steptool_jax.rewards.judge.client import JudgeRefusedError, ask_judge, backoff_seconds, make_client, \
    request_body
from steptool_jax.rewards.judge.settings import JudgeSettings
from tests.rewards.judge.loopback import LoopbackJudge, Reply, error, evaluation, tool_call_completion

KEY = "sk-test-client-0123456789"
GOOD = evaluation([1, 0], [4, 0], "Unsure")


def sequence(*replies):
  """A script answering with `replies` in order, then the last one forever."""
  counter, lock = itertools.count(), threading.Lock()

  def script(request):
    with lock:
      i = next(counter)
    return replies[min(i, len(replies) - 1)]
  return script


@pytest.fixture
def ask(monkeypatch):
  """ask(script, **settings) -> (outcome, requests, sleeps) for a 2-step trajectory."""
  monkeypatch.setenv("JUDGE_TEST_KEY", KEY)

  def run(script, **overrides):
    sleeps = []
    with LoopbackJudge(script) as judge:
      settings = JudgeSettings(**{"model": "judge-test", "base_url": judge.url, "api_key_env": "JUDGE_TEST_KEY",
                                  "timeout": 5.0, "retries": 3, "backoff": 0.5, **overrides})
      body = request_body(settings, "the prompt", 2)
      outcome = ask_judge(make_client(settings), body, 2, settings, sleep=sleeps.append, uniform=lambda: 0.0)
    return outcome, judge.requests, sleeps
  return run


def test_the_request_forces_the_evaluation_function(ask):
  outcome, requests, sleeps = ask(sequence(GOOD), temperature=0.7)
  assert outcome.judge_run.succeed_tool_calling == (1, 0) and outcome.retried == () and outcome.attempts == 1
  [request] = requests
  assert request.path == "/v1/chat/completions" and request.headers["authorization"] == f"Bearer {KEY}"
  body = request.body
  assert body["model"] == "judge-test" and body["temperature"] == 0.7
  assert body["messages"] == [{"role": "user", "content": "the prompt"}]
  assert body["tool_choice"] == {"type": "function", "function": {"name": "evaluate_process_reward"}}
  assert [tool["function"]["name"] for tool in body["tools"]] == ["evaluate_process_reward"]
  assert body["tools"][0]["function"]["parameters"]["properties"]["succeed_tool_calling"]["maxItems"] == 2
  assert KEY not in json.dumps(body)


def test_429_waits_for_retry_after_then_succeeds(ask):
  outcome, requests, sleeps = ask(sequence(error(429, headers={"Retry-After": "0.25"}), GOOD))
  assert outcome.judge_run is not None and outcome.retried == ("HTTP 429",) and outcome.attempts == 2
  assert sleeps == [0.25] and len(requests) == 2


def test_5xx_backs_off_exponentially(ask):
  outcome, _, sleeps = ask(sequence(error(500), error(502), error(503), GOOD))
  assert outcome.judge_run is not None and outcome.retried == ("HTTP 500", "HTTP 502", "HTTP 503")
  assert sleeps == [0.5, 1.0, 2.0]  # backoff * 2**attempt, no jitter with uniform() = 0


def test_a_timeout_is_retried(ask):
  outcome, requests, _ = ask(sequence(Reply(body=GOOD.body, delay=3.0), GOOD), timeout=1.0)
  assert outcome.judge_run is not None and outcome.retried == ("timeout",) and len(requests) == 2


def test_a_run_fails_after_its_last_retry_with_the_reason(ask):
  outcome, requests, sleeps = ask(sequence(error(500, "upstream overloaded")), retries=2)
  assert outcome.judge_run is None and outcome.attempts == 3 == len(requests)
  assert outcome.failure == "HTTP 500: upstream overloaded (after 3 attempts)"
  assert outcome.retried == ("HTTP 500", "HTTP 500") and len(sleeps) == 2


BAD_ANSWERS = {
    "wrong length": evaluation([1], [4], "Unsure"),
    "out of range": evaluation([1, 0], [4, 9], "Unsure"),
    "unknown status": evaluation([1, 0], [4, 0], "Partially"),
    "missing key": Reply(body=tool_call_completion(
        '{"succeed_tool_calling": [1, 0], "final_answer_status": "Solved"}')),
    "non-JSON arguments": Reply(body=tool_call_completion("succeed_tool_calling=[1, 0]")),
    "no tool call": Reply(body={"choices": [{"index": 0, "message": {"role": "assistant", "content": "All good!"}}]}),
    "non-JSON body": Reply(body=b"<html>gateway page</html>"),
}


@pytest.mark.parametrize("bad", sorted(BAD_ANSWERS))
def test_an_invalid_answer_is_asked_again_at_once(ask, bad):
  outcome, requests, sleeps = ask(sequence(BAD_ANSWERS[bad], GOOD))
  assert outcome.judge_run.contributions == (4, 0) and outcome.retried == ("invalid output",)
  assert len(requests) == 2 and sleeps == []


def test_invalid_answers_every_time_fail_the_run_with_what_was_wrong(ask):
  outcome, _, _ = ask(sequence(BAD_ANSWERS["out of range"]), retries=1)
  assert outcome.failure == ("invalid output: contribution_to_final_answer[1]: expected an integer 0..5,"
                             " found int 9 (after 2 attempts)")


def test_other_4xx_fail_without_retry_and_never_echo_the_key(ask):
  def echo_headers(request):
    return error(400, f"context too long; you sent {request.headers['authorization']}")
  outcome, requests, _ = ask(echo_headers)
  assert len(requests) == 1 and outcome.judge_run is None
  assert outcome.failure == "HTTP 400: context too long; you sent Bearer *** (not retried)"


@pytest.mark.parametrize("status, message", [(401, "judge_api_key_env: .* refused the key in JUDGE_TEST_KEY"),
                                             (403, "refused the key in JUDGE_TEST_KEY \\(HTTP 403\\)"),
                                             (404, "judge_base_url/judge_model: .* no model 'judge-test'")])
def test_refusals_stop_the_run(ask, status, message):
  with pytest.raises(JudgeRefusedError, match=message) as info:
    ask(sequence(error(status, f"bad key {KEY}")))
  assert KEY not in str(info.value)


def test_a_closed_port_is_a_connection_error(monkeypatch):
  monkeypatch.setenv("JUDGE_TEST_KEY", KEY)
  with socket.socket() as s:  # a port nobody listens on
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  settings = JudgeSettings(model="m", base_url=f"http://127.0.0.1:{port}/v1", api_key_env="JUDGE_TEST_KEY",
                           retries=1, timeout=2.0)
  sleeps = []
  outcome = ask_judge(make_client(settings), request_body(settings, "p", 0), 0, settings, sleep=sleeps.append)
  assert outcome.retried == ("connection error",) and outcome.failure.startswith("connection error: ")
  assert outcome.failure.endswith("(after 2 attempts)") and len(sleeps) == 1


def test_backoff_doubles_with_jitter_and_caps():
  settings = JudgeSettings(model="m", backoff=1.0, max_backoff=5.0)
  assert [backoff_seconds(a, settings, uniform=lambda: 0.0) for a in range(4)] == [1.0, 2.0, 4.0, 5.0]
  assert backoff_seconds(1, settings, uniform=lambda: 1.0) == 1.5  # at most 25 % shorter
  assert backoff_seconds(0, settings, retry_after=30.0) == 5.0


def test_a_missing_key_variable_is_a_clear_error(monkeypatch):
  monkeypatch.delenv("NO_SUCH_JUDGE_KEY", raising=False)
  with pytest.raises(ValueError, match="judge_api_key_env: the environment variable NO_SUCH_JUDGE_KEY is not set"):
    make_client(JudgeSettings(model="m", api_key_env="NO_SUCH_JUDGE_KEY"))
