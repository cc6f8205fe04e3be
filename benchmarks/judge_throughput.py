"""Trajectories/s of `--method=judge` against a loopback judge that answers in 200 ms.

    python benchmarks/judge_throughput.py [--trajectories=240] [--runs=3] [--delay=0.2] \
        [--concurrency=16 [--concurrency=64 ...]]

The judge (tests/rewards/judge/loopback.py, a threaded stdlib HTTP server) runs in its own
process so that its work does not compete with the client for the GIL; it waits `--delay`
seconds and then answers every request with a valid evaluation. The whole annotation is
timed end to end (read the answers, ask every run, write the cache and the TSV), starting
from an empty cache; the one-time import of `openai` is reported apart. With R runs per trajectory and concurrency C, requests that take D
seconds cap the rate at C / (R * D) trajectories/s; the report gives that bound beside
the measurement.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from steptool_jax.data.records import ToolCall, Trajectory  # noqa: E402
from steptool_jax.data.toolbench import read_converted_answers, write_converted_answers  # noqa: E402

REFERENCE = REPO.parent / "shared" / "reference-data" / "original-format" / "converted_answers_G123.json"


def serve(delay: float, ports: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
  from tests.rewards.judge.loopback import LoopbackJudge, perfect_judge

  def slow_judge(request):
    time.sleep(delay)
    return perfect_judge(request)

  with LoopbackJudge(slow_judge) as judge:
    ports.put(judge.url)
    stop.wait()


def trajectories(n: int) -> list[Trajectory]:
  """The reference answers repeated under new query ids (realistic prompt sizes), or
  synthetic 3-call trajectories when the reference data is not there."""
  if REFERENCE.exists():
    base = read_converted_answers(REFERENCE)
  else:
    call = ToolCall("tool", '{"q": 1}', '{"error": "", "response": "' + "x" * 800 + '"}')
    base = [Trajectory("0", "a task", (), (call,) * 3, ToolCall("Finish", '{"final_answer": "done"}'))]
  return [Trajectory(f"{t.query_id}-{i}", f"{t.query} (copy {i})", t.tools, t.calls, t.finish, t.method)
          for i in range(-(-n // len(base))) for t in base][:n]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--trajectories", type=int, default=240)
  parser.add_argument("--runs", type=int, default=3)
  parser.add_argument("--delay", type=float, default=0.2)
  parser.add_argument("--concurrency", type=int, action="append")
  args = parser.parse_args()
  os.environ.setdefault("OPENAI_API_KEY", "EMPTY")

  start = time.perf_counter()
  import openai  # noqa: F401 (a one-time cost of about a second, kept out of the timing)
  print(f"import openai: {time.perf_counter() - start:.2f} s (once per process, not in the numbers below)")
  from steptool_jax.annotate import AnnotateOptions, annotate
  from steptool_jax.rewards.judge.settings import JudgeSettings

  context = multiprocessing.get_context("spawn")
  ports, stop = context.Queue(), context.Event()
  server = context.Process(target=serve, args=(args.delay, ports, stop), daemon=True)
  server.start()
  url = ports.get(timeout=60)
  try:
    with tempfile.TemporaryDirectory() as tmp:
      answers = os.path.join(tmp, "answers.json")
      write_converted_answers(answers, trajectories(args.trajectories))
      for concurrency in args.concurrency or [16]:
        settings = JudgeSettings(model="loopback", base_url=url, runs=args.runs, concurrency=concurrency,
                                 cache_path=os.path.join(tmp, f"cache-{concurrency}.jsonl"))
        start = time.perf_counter()
        counts = annotate(answers, os.path.join(tmp, f"out-{concurrency}.tsv"), template="toolllama",
                          method="judge", options=AnnotateOptions(judge=settings))
        seconds = time.perf_counter() - start
        judged = counts["judge"]
        assert judged["annotated"] == args.trajectories, judged
        bound = concurrency / (args.runs * args.delay)
        print(f"concurrency {concurrency:3d}: {args.trajectories} trajectories x {args.runs} runs in {seconds:.2f} s"
              f" = {args.trajectories / seconds:.1f} trajectories/s ({judged['requests'] / seconds:.1f} requests/s;"
              f" bound {bound:.1f} trajectories/s at {args.delay * 1000:.0f} ms per request; {judged['retried']} retried)")
  finally:
    stop.set()
    server.join(timeout=5)


if __name__ == "__main__":
  main()
