"""A scripted OpenAI-compatible judge on 127.0.0.1 for the tests and the benchmark.

A real HTTP server (stdlib `ThreadingHTTPServer`, one thread per request) answers
`POST .../chat/completions` with whatever a script function returns for the decoded
request, after an optional delay; every request is recorded with its headers.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import re
import threading
import time
from typing import Any, Callable, Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class Reply:
  """What the server sends back: `body` is JSON-encoded unless it is bytes."""

  status: int = 200
  body: Any = None
  delay: float = 0.0
  headers: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Request:
  path: str
  headers: Mapping[str, str]
  body: Any


def tool_call_completion(arguments: str, *, name: str = "evaluate_process_reward") -> dict[str, Any]:
  """A chat completion whose message calls `name` with the raw `arguments` text."""
  return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "judge-test",
          "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
              "role": "assistant", "content": None,
              "tool_calls": [{"id": "call-0", "type": "function",
                              "function": {"name": name, "arguments": arguments}}]}}]}


def evaluation(succeeded: Sequence[int], contributions: Sequence[int], status: str, **delay) -> Reply:
  """A well-formed judge answer."""
  arguments = json.dumps({"succeed_tool_calling": list(succeeded),
                          "contribution_to_final_answer": list(contributions), "final_answer_status": status})
  return Reply(body=tool_call_completion(arguments), **delay)


def error(status: int, message: str = "scripted error", **kwargs) -> Reply:
  return Reply(status=status, body={"error": {"message": message, "type": "scripted", "code": status}}, **kwargs)


def prompt_of(body: Any) -> str:
  return body["messages"][0]["content"]


def steps_in_prompt(body: Any) -> int:
  """Intermediate steps the prompt lists (`Step i:` lines), counted from the text itself."""
  return len(re.findall(r"^Step \d+: ", prompt_of(body), flags=re.MULTILINE))


def perfect_judge(request: Request) -> Reply:
  """Every call succeeded and contributed fully; Solved."""
  n = steps_in_prompt(request.body)
  return evaluation([1] * n, [5] * n, "Solved")


class LoopbackJudge:
  """`with LoopbackJudge(script) as judge:` serves on `judge.url` until the block ends."""

  def __init__(self, script: Callable[[Request], Reply] = perfect_judge, *, port: int = 0):
    self.script = script
    self.requests: list[Request] = []
    self._lock = threading.Lock()
    judge = self

    class Handler(http.server.BaseHTTPRequestHandler):
      protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
      disable_nagle_algorithm = True  # headers and body go out in two writes; no 40 ms delayed-ACK stall

      def do_POST(self):  # noqa: N802 (the stdlib's naming)
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        try:
          body = json.loads(raw)
        except json.JSONDecodeError:
          body = raw
        request = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        with judge._lock:
          judge.requests.append(request)
        reply = judge.script(request)
        if reply.delay:
          time.sleep(reply.delay)
        data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        try:
          self.send_response(reply.status)
          self.send_header("Content-Type", "application/json")
          self.send_header("Content-Length", str(len(data)))
          for key, value in reply.headers.items():
            self.send_header(key, value)
          self.end_headers()
          self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
          pass  # the client gave up (timeout) or was killed

      def log_message(self, *args):
        pass

    class Server(http.server.ThreadingHTTPServer):
      request_queue_size = 256  # the default listen backlog of 5 resets bursts of new connections

    self._server = Server(("127.0.0.1", port), Handler)
    self._server.daemon_threads = True
    self._server.block_on_close = False  # handlers still sleeping on a timed-out request are not waited for
    self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

  @property
  def url(self) -> str:
    return f"http://127.0.0.1:{self._server.server_port}/v1"

  def __enter__(self) -> "LoopbackJudge":
    self._thread.start()
    return self

  def __exit__(self, *exc_info) -> None:
    self._server.shutdown()
    self._server.server_close()
