"""How much do a policy's step rewards say about whether its episodes are solved?

    python benchmarks/step_reward_probe.py OUT/eval/sft/validation/episodes.jsonl OUT/eval/sft/test/episodes.jsonl

Reads evaluation episodes (`python -m steptool_jax.evaluate`'s `episodes.jsonl`: each episode's
`step_rewards`, the intermediate calls' rewards first, the final IsSolved last) and prints, per
file: the mean intermediate-step reward of solved and unsolved episodes, how many episodes of
each have every intermediate reward at 1.0, how the episodes ended, and the correlation between
an episode's mean intermediate reward and its being solved (point-biserial). A correlation near
0 means the step rewards add signal the final reward does not have; near 1, that they repeat
it; in between, the dense part carries some of the outcome and some of its own.
"""

from __future__ import annotations

import collections
import json
import statistics
import sys

import numpy as np


def probe(path: str) -> dict:
  with open(path) as f:
    episodes = [json.loads(line) for line in f if line.strip()]
  by_status: dict[str, list[float]] = collections.defaultdict(list)
  all_full = collections.Counter()
  endings = collections.Counter()
  means, solved = [], []
  for episode in episodes:
    intermediate = episode["step_rewards"][:len(episode["succ_calling"])]
    endings[f"{episode['status']}/{episode['outcomes'][-1]}"] += 1
    if not intermediate:
      continue
    mean = statistics.fmean(intermediate)
    by_status[episode["status"]].append(mean)
    all_full[episode["status"]] += all(r == 1.0 for r in intermediate)
    means.append(mean)
    solved.append(float(episode["status"] == "Solved"))
  correlation = float(np.corrcoef(means, solved)[0, 1]) if len(set(solved)) == 2 else float("nan")
  return {"file": path, "episodes": len(episodes),
          "mean_intermediate_reward": {s: round(statistics.fmean(v), 3) for s, v in sorted(by_status.items())},
          "episodes_with_intermediate": {s: len(v) for s, v in sorted(by_status.items())},
          "every_intermediate_reward_1": dict(sorted(all_full.items())), "endings": dict(sorted(endings.items())),
          "correlation_with_solved": round(correlation, 3)}


def main(paths: list[str]) -> None:
  if not paths:
    raise SystemExit(__doc__)
  for path in paths:
    print(json.dumps(probe(path)))


if __name__ == "__main__":
  main(sys.argv[1:])
