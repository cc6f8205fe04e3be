"""Judging many trajectories: bounded concurrency, the on-disk cache, progress, summary.

Every (trajectory, run index) whose run is not in the cache becomes one request. At most
`concurrency` requests are in flight (worker threads: the work is waiting on HTTP) and as
many again wait in a queue, so prompts are built as they are needed, not all up front. Each finished run is written to the cache at once, from this thread only (no
locks). A trajectory is annotated when all its runs are valid; a run that fails after its
retries makes the trajectory fail, with the reason in the summary, and its valid runs stay
cached so a rerun asks only the missing ones.
"""

from __future__ import annotations

import collections
import dataclasses
import queue
import sys
import threading
from typing import Any, Callable, Iterator, Sequence

import tqdm

from steptool_jax.data.records import JudgeRun, RewardAnnotation, Trajectory
from steptool_jax.rewards.judge.cache import RunCache, request_key
from steptool_jax.rewards.judge.client import RunOutcome, ask_judge, make_client, request_body
from steptool_jax.rewards.judge.prompt import load_prompt_template, render_judge_prompt
from steptool_jax.rewards.judge.settings import JudgeSettings


@dataclasses.dataclass
class JudgeSummary:
  """Counts of one annotation run (the end-of-run report)."""

  trajectories: int = 0
  annotated: int = 0
  runs_from_cache: int = 0
  runs_asked: int = 0
  requests: int = 0
  retried: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  failed: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # query id -> reasons
  unreadable_cache_lines: int = 0

  def to_dict(self) -> dict[str, Any]:
    return {"trajectories": self.trajectories, "annotated": self.annotated, "failed": len(self.failed),
            "runs_from_cache": self.runs_from_cache, "runs_asked": self.runs_asked, "requests": self.requests,
            "retried": sum(self.retried.values()), "retried_by_reason": dict(sorted(self.retried.items())),
            "failures": self.failed, "unreadable_cache_lines": self.unreadable_cache_lines}

  def format(self) -> str:
    """The human-readable report, one failure reason per line."""
    retried = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.retried.items()))
    lines = [f"judge: {self.trajectories} trajectories: {self.annotated} annotated, {len(self.failed)} failed;"
             f" {self.runs_asked} runs asked, {self.runs_from_cache} from cache; {self.requests} requests,"
             f" {sum(self.retried.values())} retried" + (f" ({retried})" if retried else "")]
    if self.unreadable_cache_lines:
      lines.append(f"judge: skipped {self.unreadable_cache_lines} unreadable cache line(s)")
    for query_id, reasons in self.failed.items():
      lines.extend(f"judge: failed {query_id}: {reason}" for reason in reasons)
    if self.failed:
      lines.append("judge: rerun the same command to ask the failed runs again (finished ones come from the cache)")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class _Job:
  index: int  # of the trajectory in the input
  run: int
  key: str
  body: dict[str, Any]
  num_steps: int  # intermediate steps: the length both score lists must have


def judge_trajectories(trajectories: Sequence[Trajectory], settings: JudgeSettings, *, client: Any = None,
                       progress: bool | None = None) -> tuple[list[tuple[JudgeRun, ...] | None], JudgeSummary]:
  """The judge runs of every trajectory (None where a run failed), and the summary.

  `client` defaults to `make_client(settings)`; `progress=None` shows the bar on a terminal.

  Raises:
    JudgeRefusedError: the endpoint refused a request outright (finished runs stay cached).
  """
  template = load_prompt_template(settings.prompt_path)
  client = make_client(settings) if client is None else client  # a missing key fails before any file is touched
  summary = JudgeSummary(trajectories=len(trajectories))
  runs: list[dict[int, JudgeRun]] = [{} for _ in trajectories]
  outstanding = [settings.runs] * len(trajectories)  # runs not yet answered or failed

  with RunCache(settings.cache_path) as cache:
    summary.unreadable_cache_lines = cache.unreadable_lines

    def jobs() -> Iterator[_Job]:
      for index, trajectory in enumerate(trajectories):
        prompt = render_judge_prompt(template, trajectory, max_response_chars=settings.max_response_chars)
        body = request_body(settings, prompt, len(trajectory.calls))
        key = request_key(trajectory.query_id, body)
        for run in range(settings.runs):
          cached = cache.get(key, run)
          if cached is None:
            yield _Job(index, run, key, body, len(trajectory.calls))
          else:
            summary.runs_from_cache += 1
            record(index, run, cached)

    def record(index: int, run: int, judge_run: JudgeRun | None) -> None:
      if judge_run is not None:
        runs[index][run] = judge_run
      outstanding[index] -= 1
      if outstanding[index] == 0:
        bar.update(1)

    def finish(job: _Job, outcome: RunOutcome) -> None:
      summary.runs_asked += 1
      summary.requests += outcome.attempts
      summary.retried.update(outcome.retried)
      if outcome.judge_run is not None:
        cache.put(job.key, job.run, trajectories[job.index].query_id, outcome.judge_run)
      else:
        summary.failed.setdefault(trajectories[job.index].query_id, []).append(f"run {job.run}: {outcome.failure}")
      record(job.index, job.run, outcome.judge_run)
      bar.set_postfix(retried=sum(summary.retried.values()), failed=len(summary.failed), refresh=False)

    with tqdm.tqdm(total=len(trajectories), unit="traj", desc="judge", file=sys.stderr,
                   disable=None if progress is None else not progress) as bar:
      _run_bounded(jobs(), client, settings, finish)

  results = [tuple(by_run[run] for run in range(settings.runs)) if len(by_run) == settings.runs else None
             for by_run in runs]
  summary.annotated = sum(result is not None for result in results)
  return results, summary


class _Stopped(Exception):
  """Raised in a worker's backoff sleep once the run has been abandoned."""


def _run_bounded(jobs: Iterator[_Job], client: Any, settings: JudgeSettings,
                 finish: Callable[[_Job, RunOutcome], None]) -> None:
  """Runs the jobs on `concurrency` worker threads, calling `finish` here as each one completes.

  The workers are daemon threads: when the run stops early (Ctrl-C, a refusal) the process
  exits at once instead of waiting out requests in flight; their answers were never cached,
  so a rerun asks them again.
  """
  todo: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
  done: queue.SimpleQueue[tuple[_Job, RunOutcome | BaseException]] = queue.SimpleQueue()
  stopped = threading.Event()

  def sleep(seconds: float) -> None:
    if stopped.wait(seconds):
      raise _Stopped

  def work() -> None:
    while (job := todo.get()) is not None and not stopped.is_set():
      try:
        done.put((job, ask_judge(client, job.body, job.num_steps, settings, sleep=sleep)))
      except _Stopped:
        return
      except BaseException as e:  # handed to the main thread, which decides
        done.put((job, e))

  def collect() -> None:
    job, outcome = done.get()
    if isinstance(outcome, BaseException):
      raise outcome  # a JudgeRefusedError, or a bug: stop the run
    finish(job, outcome)

  workers = [threading.Thread(target=work, name=f"judge-{i}", daemon=True) for i in range(settings.concurrency)]
  for worker in workers:
    worker.start()
  in_flight = 0
  try:
    for job in jobs:
      while in_flight >= 2 * settings.concurrency:  # bounded: prompts are built as they are needed
        collect()
        in_flight -= 1
      todo.put(job)
      in_flight += 1
    while in_flight:
      collect()
      in_flight -= 1
  finally:
    stopped.set()
    for _ in workers:
      todo.put(None)


def annotation_from_runs(trajectory: Trajectory, runs: Sequence[JudgeRun]) -> RewardAnnotation:
  """The trajectory and its judge runs as a `RewardAnnotation` (for the shaping formula)."""
  return RewardAnnotation(query_id=trajectory.query_id, query=trajectory.query, tool_names=trajectory.tool_names,
                          calls=trajectory.calls, finish=trajectory.finish, runs=tuple(runs))
