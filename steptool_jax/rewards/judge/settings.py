"""What a judge annotation run needs to know: endpoint, model, runs, limits, files.

The settings hold the *name* of the environment variable with the API key, never the key:
they are printed, logged and compared freely. The key is read once, when the HTTP client
is built (`client.make_client`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import urllib.parse

DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_MAX_RESPONSE_CHARS = 1024  # ToolBench already cuts observations at 1024 characters


@dataclasses.dataclass(frozen=True)
class JudgeSettings:
  """One judge annotation run.

  Attributes:
    model: the judge model name the endpoint serves.
    base_url: the OpenAI-compatible API root (`.../v1`); None means the client's default
      (`OPENAI_BASE_URL`, else api.openai.com).
    api_key_env: the environment variable holding the API key.
    runs: judge runs per trajectory (the paper averages three).
    concurrency: requests in flight at once.
    prompt_path: a prompt template file; None is the packaged `prompt.txt`.
    cache_path: the JSONL file finished runs are appended to; None keeps them in memory only.
    timeout: seconds one request may take before it counts as timed out.
    retries: further attempts of one run after a timeout, 429, 5xx or invalid judge output.
    backoff: seconds before the first retry; doubled for each further one.
    max_backoff: the longest wait between two attempts (also caps `Retry-After`).
    temperature: sampling temperature sent to the judge; None leaves the server's default.
    max_response_chars: tool responses longer than this are cut (with `...`) in the prompt.
  """

  model: str
  base_url: str | None = None
  api_key_env: str = DEFAULT_API_KEY_ENV
  runs: int = 3
  concurrency: int = 16
  prompt_path: str | None = None
  cache_path: str | None = None
  timeout: float = 120.0
  retries: int = 5
  backoff: float = 1.0
  max_backoff: float = 60.0
  temperature: float | None = None
  max_response_chars: int = DEFAULT_MAX_RESPONSE_CHARS

  def __post_init__(self):
    if not self.model:
      raise ValueError("judge_model: expected the name of the judge model (--judge-model), found none")
    for name in ("runs", "concurrency", "max_response_chars"):
      if getattr(self, name) < 1:
        raise ValueError(f"judge_{name}: expected an integer >= 1, found {getattr(self, name)}")
    if self.retries < 0:
      raise ValueError(f"judge_retries: expected an integer >= 0, found {self.retries}")
    for name in ("timeout", "backoff", "max_backoff"):
      if not getattr(self, name) >= 0:
        raise ValueError(f"judge_{name}: expected seconds >= 0, found {getattr(self, name)}")

  def describe(self) -> str:
    """One line for the log; names the key's variable, never its value."""
    return (f"judge: model={self.model} base_url={redact_url(self.base_url) or '(client default)'}"
            f" runs={self.runs} concurrency={self.concurrency} api_key_env={self.api_key_env}"
            f" cache={self.cache_path or '(memory)'}")


def read_api_key(settings: JudgeSettings) -> str:
  """The key from `settings.api_key_env`.

  Raises:
    ValueError: the variable is not set (a server without auth accepts any value, e.g. EMPTY).
  """
  key = os.environ.get(settings.api_key_env)
  if not key:
    raise ValueError(f"judge_api_key_env: the environment variable {settings.api_key_env} is not set; set it to"
                     " the judge's API key (a server without authentication accepts any value, e.g. EMPTY)")
  return key


def redact_url(url: str | None) -> str | None:
  """The URL without a `user:password@` part (some gateways take credentials there)."""
  if not url:
    return url
  parts = urllib.parse.urlsplit(url)
  if parts.username is None and parts.password is None:
    return url
  host = parts.hostname or ""
  netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
  return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def add_judge_arguments(parser: argparse.ArgumentParser) -> None:
  """The `--judge-*` and `--concurrency` flags of `python -m steptool_jax.annotate`."""
  group = parser.add_argument_group("LLM judge (--method=judge)")
  group.add_argument("--judge-base-url", help="OpenAI-compatible API root, e.g. http://localhost:8000/v1")
  group.add_argument("--judge-model", help="judge model name")
  group.add_argument("--judge-runs", type=int, default=3, help="judge runs per trajectory (averaged)")
  group.add_argument("--judge-api-key-env", default=DEFAULT_API_KEY_ENV,
                     help="environment variable holding the API key (its value is never printed)")
  group.add_argument("--concurrency", type=int, default=16, help="judge requests in flight at once")
  group.add_argument("--judge-prompt", help="prompt template file (default: the packaged prompt.txt)")
  group.add_argument("--judge-cache", help="JSONL cache of finished runs (default: OUTPUT.judge-cache.jsonl)")
  group.add_argument("--judge-timeout", type=float, default=120.0, help="seconds per request")
  group.add_argument("--judge-retries", type=int, default=5, help="retries per run (timeouts, 429, 5xx, bad output)")
  group.add_argument("--judge-backoff", type=float, default=1.0, help="seconds before the first retry (doubles)")
  group.add_argument("--judge-temperature", type=float, help="sampling temperature (default: the server's)")
  group.add_argument("--judge-max-response-chars", type=int, default=DEFAULT_MAX_RESPONSE_CHARS,
                     help="tool responses are cut to this length in the prompt")


def judge_settings_from_args(args: argparse.Namespace) -> JudgeSettings | None:
  """Settings from the parsed flags; None unless `--method=judge` with a `--judge-model`
  (the judge method then says what is missing)."""
  if args.method != "judge" or not args.judge_model:
    return None
  return JudgeSettings(
      model=args.judge_model, base_url=args.judge_base_url, api_key_env=args.judge_api_key_env,
      runs=args.judge_runs, concurrency=args.concurrency, prompt_path=args.judge_prompt,
      cache_path=args.judge_cache or f"{args.output}.judge-cache.jsonl", timeout=args.judge_timeout,
      retries=args.judge_retries, backoff=args.judge_backoff, temperature=args.judge_temperature,
      max_response_chars=args.judge_max_response_chars)
