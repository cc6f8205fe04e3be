"""Trajectories/s for the rule-based annotator, and the LCS against the naive table.

    python benchmarks/data_rule_annotation.py [--replicas=1000]

Annotates the reference converted answers replicated `--replicas` times (SuccCalling,
word-level LCS Contribution, give-up IsSolved), then times one LCS of a long tool
response against a final answer, bit-parallel vs the textbook O(n*m) Python table.
"""

from __future__ import annotations

import argparse
import pathlib
import random
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from steptool_jax.data.toolbench import read_converted_answers  # noqa: E402
from steptool_jax.rewards.is_solved import give_up_rule  # noqa: E402
from steptool_jax.rewards.lcs import lcs_length  # noqa: E402
from steptool_jax.rewards.rules import annotate_by_rules  # noqa: E402

REFERENCE = REPO.parent / "shared" / "reference-data" / "original-format" / "converted_answers_G123.json"


def naive_lcs(a, b) -> int:
  previous = [0] * (len(b) + 1)
  for x in a:
    current = [0]
    for j, y in enumerate(b):
      current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
    previous = current
  return previous[-1]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--replicas", type=int, default=1000)
  args = parser.parse_args()
  trajectories = read_converted_answers(REFERENCE) * args.replicas
  source = give_up_rule()
  calls = sum(len(t.calls) for t in trajectories)
  start = time.perf_counter()
  for trajectory in trajectories:
    annotate_by_rules(trajectory, source(trajectory))
  seconds = time.perf_counter() - start
  print(f"rule annotation: {len(trajectories)} trajectories ({calls} tool calls) in {seconds:.2f} s:"
        f" {len(trajectories) / seconds:.0f} trajectories/s")

  rng = random.Random(0)
  vocabulary = [f"w{i}" for i in range(300)]
  response = [rng.choice(vocabulary) for _ in range(3000)]
  answer = [rng.choice(vocabulary) for _ in range(300)]
  start = time.perf_counter()
  fast = lcs_length(response, answer)
  fast_s = time.perf_counter() - start
  start = time.perf_counter()
  slow = naive_lcs(response, answer)
  slow_s = time.perf_counter() - start
  assert fast == slow
  print(f"LCS of 3000 x 300 words: bit-parallel {fast_s * 1e3:.2f} ms, naive table {slow_s * 1e3:.0f} ms"
        f" ({slow_s / fast_s:.0f}x)")


if __name__ == "__main__":
  main()
