"""Times `python -m steptool_jax.envs generate` and reports the expert's pass rate per mistake rate.

  python benchmarks/envs_generate.py [--tasks=1000] [--seed=0] [--rates=0,0.1,0.3,0.5]

For each mistake rate it generates the full data set (SFT, step-grained TSV, converted
answers, TFDS) into a temporary directory and prints one JSON line: wall time, pass rate
(share Solved) over all splits and per split, mean IsSolved reward, tool recall, steps per
episode and the mean intermediate step reward.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import tensorflow_datasets as tfds  # noqa: E402

from steptool_jax.envs.generate import GenerateConfig, generate  # noqa: E402
from steptool_jax.envs.settings import EnvSettings


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--tasks", type=int, default=1000)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--rates", default="0,0.1,0.3,0.5")
  args = parser.parse_args()
  tfds.disable_progress_bar()
  for rate in (float(r) for r in args.rates.split(",")):
    with tempfile.TemporaryDirectory() as out:
      start = time.perf_counter()
      summary = generate(out, GenerateConfig(EnvSettings(num_tasks=args.tasks, seed=args.seed, mistake_rate=rate),
                                                template="toolllama"))
      seconds = time.perf_counter() - start
      episodes = [json.loads(line) for split in summary["splits"]
                  for line in (pathlib.Path(out) / "episodes" / f"{split}.jsonl").read_text().splitlines()]
    intermediate = [r for e in episodes for r in e["step_rewards"][: len(e["succ_calling"])]]
    print(json.dumps({
        "mistake_rate": rate, "tasks": len(episodes), "seconds": round(seconds, 2),
        "pass_rate": round(statistics.fmean(e["status"] == "Solved" for e in episodes), 4),
        "pass_rate_by_split": {s: round(v["pass_rate"], 4) for s, v in summary["splits"].items()},
        "mean_is_solved": round(statistics.fmean(
            {"Solved": 1.0, "Unsure": 0.5, "Unsolved": 0.0}[e["status"]] for e in episodes), 4),
        "tool_recall": round(statistics.fmean(e["tool_recall"] for e in episodes), 4),
        "steps_per_episode": round(statistics.fmean(e["num_steps"] for e in episodes), 3),
        "mean_intermediate_reward": round(statistics.fmean(intermediate), 4),
    }))


if __name__ == "__main__":
  main()
