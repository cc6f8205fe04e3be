"""One judge run against an OpenAI-compatible chat-completions endpoint, with retries.

The maintained `openai` client does the HTTP; its own retries are switched off
(`max_retries=0`) because a judge run is retried for more than transport errors (an
answer that fails validation is retried too) and every retry is counted for the summary.

An attempt is retried after a timeout, a connection error or HTTP 408/409/429/5xx, with
exponential backoff and jitter (or after the server's `Retry-After`), and at once after an
invalid evaluation (no call, non-JSON arguments, wrong list lengths, out-of-range values,
unknown status). HTTP 401/403/404 mean every request will fail the same way (wrong key, URL or
model): they stop the whole run with `JudgeRefusedError`. Other 4xx (e.g. a prompt too long
for the judge's context) fail that run without retrying.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from typing import Any, Callable

from steptool_jax.data.records import JudgeRun
from steptool_jax.rewards.judge.schema import JudgeOutputError, evaluation_tool, forced_tool_choice, \
    judge_run_from_completion
from steptool_jax.rewards.judge.settings import JudgeSettings, read_api_key, redact_url

RETRYABLE_STATUS = frozenset({408, 409, 429})
INVALID_OUTPUT = "invalid output"


class JudgeRefusedError(ValueError):
  """The endpoint refuses every request (bad key, URL or model): nothing to retry."""


@dataclasses.dataclass(frozen=True)
class RunOutcome:
  """What asking for one judge run gave.

  Attributes:
    judge_run: the validated run, or None when every attempt failed.
    retried: the reason of each attempt that was retried (`HTTP 429`, `timeout`, ...).
    failure: why the run failed (the last attempt's error), or None.
    attempts: requests sent.
  """

  judge_run: JudgeRun | None
  retried: tuple[str, ...] = ()
  failure: str | None = None
  attempts: int = 1


def make_client(settings: JudgeSettings) -> Any:
  """An `openai.OpenAI` client for the judge endpoint (the key read from its variable)."""
  import openai  # imported here: a second to import, and only the judge method needs it

  return openai.OpenAI(base_url=settings.base_url, api_key=read_api_key(settings), max_retries=0,
                       timeout=settings.timeout)


def request_body(settings: JudgeSettings, prompt: str, num_steps: int) -> dict[str, Any]:
  """The chat-completions request for one run: the prompt, the forced evaluation function."""
  body: dict[str, Any] = {
      "model": settings.model,
      "messages": [{"role": "user", "content": prompt}],
      "tools": [evaluation_tool(num_steps)],
      "tool_choice": forced_tool_choice(),
  }
  if settings.temperature is not None:
    body["temperature"] = settings.temperature
  return body


def ask_judge(client: Any, body: dict[str, Any], num_steps: int, settings: JudgeSettings, *,
              sleep: Callable[[float], None] = time.sleep,
              uniform: Callable[[], float] = random.random) -> RunOutcome:
  """One judge run: the request, retried as the module docstring says, until it validates.

  Raises:
    JudgeRefusedError: HTTP 401, 403 or 404.
  """
  import openai

  secret = getattr(client, "api_key", None)
  retried: list[str] = []
  for attempt in range(settings.retries + 1):
    retry_after = None
    try:
      raw = client.chat.completions.with_raw_response.create(**body)
      try:
        completion = json.loads(raw.text)
      except json.JSONDecodeError:
        raise JudgeOutputError(f"expected a JSON response body, found {raw.text[:80]!r}") from None
      return RunOutcome(judge_run_from_completion(completion, num_steps), tuple(retried), None, attempt + 1)
    except JudgeOutputError as e:
      reason, detail = INVALID_OUTPUT, _redact(str(e), secret)  # it quotes what the server sent
    except openai.APIStatusError as e:
      status = e.status_code
      if status in (401, 403):
        raise JudgeRefusedError(
            f"judge_api_key_env: the judge at {redact_url(settings.base_url) or 'the default endpoint'} refused the"
            f" key in {settings.api_key_env} (HTTP {status})") from None
      if status == 404:
        raise JudgeRefusedError(
            f"judge_base_url/judge_model: {redact_url(settings.base_url) or 'the default endpoint'} has no"
            f" chat-completions route or no model {settings.model!r} (HTTP 404: {_redact(_server_message(e), secret)})"
        ) from None
      reason, detail = f"HTTP {status}", _redact(_server_message(e), secret)
      if status not in RETRYABLE_STATUS and status < 500:
        return RunOutcome(None, tuple(retried), f"{reason}: {detail} (not retried)", attempt + 1)
      retry_after = _retry_after_seconds(e.response.headers.get("retry-after"))
    except openai.APITimeoutError:
      reason, detail = "timeout", f"no response within {settings.timeout:g} s"
    except openai.APIConnectionError as e:
      reason, detail = "connection error", _redact(str(e.__cause__ or e), secret)
    if attempt == settings.retries:
      return RunOutcome(None, tuple(retried), f"{reason}: {detail} (after {attempt + 1} attempts)", attempt + 1)
    retried.append(reason)
    if reason != INVALID_OUTPUT:  # a bad answer is not a busy server: ask again at once
      sleep(backoff_seconds(attempt, settings, retry_after=retry_after, uniform=uniform))
  raise AssertionError("unreachable: the loop returns on its last attempt")


def backoff_seconds(attempt: int, settings: JudgeSettings, *, retry_after: float | None = None,
                    uniform: Callable[[], float] = random.random) -> float:
  """The wait after failed attempt `attempt` (0-based): the server's `Retry-After` when it
  sent one, else `backoff * 2**attempt` minus up to 25 % jitter, both capped."""
  if retry_after is not None:
    return min(retry_after, settings.max_backoff)
  # Jitter spreads the retries of many concurrent requests that failed together.
  return min(settings.backoff * 2.0 ** attempt, settings.max_backoff) * (1.0 - 0.25 * uniform())


def _retry_after_seconds(value: str | None) -> float | None:
  try:
    seconds = float(value) if value is not None else None
  except ValueError:
    return None  # the HTTP-date form is rare on these APIs; fall back to our backoff
  return seconds if seconds is not None and 0 <= seconds < float("inf") else None


def _server_message(error: Any) -> str:
  """The server's own words: `error.message` of the JSON body, else the start of the body."""
  body = error.body
  if isinstance(body, dict) and isinstance(body.get("message"), str):
    return body["message"]
  return str(body)[:200] if body else "(no body)"


def _redact(text: str, secret: str | None) -> str:
  """Some servers echo request headers in error messages; the key never goes further."""
  return text.replace(secret, "***") if secret else text
