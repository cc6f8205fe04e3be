r"""One command that measures the project's figures on one accelerator within a device window.

    PYTHONPATH=. python benchmarks/device_suite.py            # one H100/H200: <= 8 minutes, compilation included
    PYTHONPATH=. python benchmarks/device_suite.py --smoke    # every part at toy shapes, on a CPU: ~100 s

Four parts, in this order, each the measurement of an existing benchmark called as a function
on a mesh over the first device:

  train_step        forward + backward + AdamW of llama3_2_1b (~1.2B) at 4096 tokens, batch 4,
                    bf16, remat=full, full fine-tuning (`model_train_step.measure_train_step`);
                    MFU and tokens/s. Target >= 45% MFU.
  ppo_update        the trainer's fused PPO update at the same shape (8 rows, micro-batches of 2,
                    accumulation 4, 4 epochs; `train_ppo_update.measure_update`), LoRA r 8 and
                    full fine-tuning; MFU and tokens/s. Target >= 40% MFU.
  decode            `generate` tokens/s of the same model at batch 1 and 32 (prompt 512, the slope
                    over 64 -> 192 new tokens; `model_decode.measure_decode`) against the HBM
                    bound (parameter bytes + KV-cache bytes read per step / peak bandwidth).
                    Target at batch 1 >= 50% of the bound.
  online_iteration  online StepTool iterations at the SmolLM2-135M shape (random weights, the
                    built-in tokenizer and environment, bf16): the trainer's online source plays
                    8 episodes of up to 4 actions (`trainer.sources.online`), then its PPO update
                    runs on them; rollout action tokens/s, update tokens/s and MFU, seconds per
                    iteration. The first iteration compiles and is reported apart.

Budgets: each part has one (`--budget_<part>_s`, defaults summing to 450 s; the rest of the
8 minutes is start-up). A part measures steps until its deadline (its start + its budget, cut
short by the suite's deadline = the suite's start + the sum of the budgets, so a part that
overran takes time from the later ones) and at least one step once compiled. A part is
skipped, with the reason in the outputs, when its budget is 0 or when less than a quarter of
it is left of the suite's time; a part that raises (out of memory, ...) is reported failed with
the error, and the suite goes on. Compilation cannot be interrupted: a part whose compile
alone outlasts its budget still finishes its first step.

Peaks come from `trainer.flops.DEVICE_SPECS` by `device_kind` (H100 SXM 989 TFLOP/s dense bf16,
3.35 TB/s; H200 989, 4.8 TB/s). On a device not in that table (a CPU) the suite measures a
matmul rate and reports MFU against it, labelled so, and the bandwidth bound as unknown.

Writes `<out_dir>/device_suite_<device>.json` and `.md` (`_smoke` added with `--smoke`) after
every part (a suite stopped from outside keeps what it measured; the parts not reached say so),
prints a progress line per part and, last, one JSON line: part -> key figures or the skip reason.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import json
import math
import os
import pathlib
import platform
import re
import sys
import time
from typing import Any, Callable

import jax
import numpy as np
from absl import app, flags

from benchmarks import model_decode, model_train_step, train_ppo_update
from benchmarks.timing import matmul_rate
from configs import tiny as tiny_config
from steptool_jax.config.run import parse_run_config
from steptool_jax.envs.builtin_tokenizer import load_tokenizer
from steptool_jax.models.policy import Policy
from steptool_jax.parallel import make_mesh
from steptool_jax.trainer import flops, policy_init
from steptool_jax.trainer.sources.batches import device_batch
from steptool_jax.trainer.sources.online import make_online_source

PARTS = ("train_step", "ppo_update", "decode", "online_iteration")
TARGETS = {"train_step": ("mfu", 0.45), "ppo_update": ("mfu", 0.40), "decode": ("fraction_of_bound", 0.50)}


@dataclasses.dataclass(frozen=True)
class Shapes:
  """What each part runs: the device sizes, or the toy sizes of `--smoke`."""

  dtype: str = "bfloat16"
  train_preset: str = "llama3_2_1b"
  seq_len: int = 4096
  train_batch: int = 4
  remat: str = "full"
  train_steps: int = 10
  ppo_rows: int = 8
  ppo_minibatch: int = 2
  ppo_accum: int = 4
  ppo_epochs: int = 4
  ppo_steps: int = 5
  decode_batches: tuple[int, ...] = (1, 32)
  prompt_len: int = 512
  new_tokens: tuple[int, int] = (64, 192)
  decode_repeats: int = 3
  online_preset: str = "smollm2_135m"
  online_rows: int = 8
  online_minibatch: int = 2
  online_accum: int = 4
  online_epochs: int = 4
  online_context: int = 1024
  online_response: int = 64
  online_max_steps: int = 4
  online_tasks: int = 200
  online_iterations: int = 6  # at most, the first (compiling) one included
  matmul_size: int = 4096


DEVICE = Shapes()
SMOKE = Shapes(dtype="float32", train_preset="tiny", seq_len=32, train_batch=2, train_steps=2, ppo_rows=2,
               ppo_minibatch=2, ppo_accum=1, ppo_epochs=1, ppo_steps=1, decode_batches=(1, 2), prompt_len=8,
               new_tokens=(4, 36), decode_repeats=3, online_preset="tiny", online_rows=2, online_minibatch=2,
               online_accum=1, online_epochs=1, online_context=48, online_response=8, online_max_steps=2,
               online_tasks=20, online_iterations=2, matmul_size=256)


@dataclasses.dataclass(frozen=True)
class SuiteOptions:
  smoke: bool = False
  out_dir: str = "benchmarks/results"
  budget_train_s: float = 90.0
  budget_ppo_s: float = 170.0
  budget_decode_s: float = 80.0
  budget_online_s: float = 110.0

  def budgets(self) -> dict[str, float]:
    return dict(zip(PARTS, (self.budget_train_s, self.budget_ppo_s, self.budget_decode_s, self.budget_online_s)))


def log(message: str) -> None:
  print(f"[device_suite {time.strftime('%H:%M:%S')}] {message}", flush=True)


def device_limits(device: jax.Device, shapes: Shapes) -> dict[str, Any]:
  """The peak FLOP/s and HBM bandwidth the figures are measured against, and where they come from."""
  peak, hbm = flops.device_peaks(device)
  if peak is not None:
    return {"peak_flops": peak, "hbm_bytes_per_s": hbm, "peak_measured": False,
            "peak_source": f"trainer.flops.DEVICE_SPECS for {device.device_kind!r}"}
  dtype = "float32" if device.platform == "cpu" else "bfloat16"
  rate = matmul_rate(shapes.matmul_size, dtype)
  return {"peak_flops": rate, "hbm_bytes_per_s": None, "peak_measured": True,
          "peak_source": f"measured {shapes.matmul_size}^3 {dtype} matmul ({rate / 1e12:.3f} TFLOP/s): the device is"
                         " not in trainer.flops.DEVICE_SPECS, so MFU here is against that rate, not a peak, and"
                         " the bandwidth bound is unknown"}


def run_train_step(shapes: Shapes, mesh, limits, deadline: float) -> dict[str, Any]:
  return model_train_step.measure_train_step(
      preset_name=shapes.train_preset, seq_len=shapes.seq_len, batch=shapes.train_batch, dtype=shapes.dtype,
      remat=shapes.remat, trainable="full", steps=shapes.train_steps, mesh=mesh, peak_flops=limits["peak_flops"],
      deadline=deadline)


def run_ppo_update(shapes: Shapes, mesh, limits, deadline: float) -> dict[str, Any]:
  """LoRA in the first half of the time left, full fine-tuning in the rest."""
  out: dict[str, Any] = {}
  for trainable in ("lora", "full"):
    if trainable == "lora":
      part_deadline = time.perf_counter() + (deadline - time.perf_counter()) / 2
    else:
      part_deadline = deadline
      if time.perf_counter() >= deadline:
        out[trainable] = skipped("the part's budget was spent by the LoRA update")
        continue
    config = train_ppo_update.ppo_config(
        preset_name=shapes.train_preset, batch=shapes.ppo_rows, minibatch=shapes.ppo_minibatch,
        accum=shapes.ppo_accum, epochs=shapes.ppo_epochs, trainable=trainable, dtype=shapes.dtype,
        remat=shapes.remat)
    run = parse_run_config(config)
    vocab = 512  # of the tiny preset (the others have their own)
    local = train_ppo_update.synthetic_batch(shapes.ppo_rows, shapes.seq_len,
                                             policy_init.random_model_config(run, vocab).vocab_size)
    bench = train_ppo_update.build_update(run, vocab, mesh, tuple(local))
    out[trainable] = {"status": "measured", **train_ppo_update.measure_update(
        bench, local, steps=shapes.ppo_steps, peak_flops=limits["peak_flops"], deadline=part_deadline)}
    log(f"ppo_update {trainable}: {figures_line(out[trainable])}")
    del bench
    release()
  return out


def run_decode(shapes: Shapes, mesh, limits, deadline: float) -> dict[str, Any]:
  """Each batch size in an equal share of the time left."""
  cfg = model_train_step.model_config(shapes.train_preset, param_dtype=shapes.dtype, dtype=shapes.dtype)
  policy = model_decode.random_policy(cfg, mesh)
  out: dict[str, Any] = {"preset": shapes.train_preset, "params": cfg.num_params(), "dtype": shapes.dtype}
  for i, batch in enumerate(shapes.decode_batches):
    now = time.perf_counter()
    if now >= deadline:
      out[f"batch_{batch}"] = skipped("the part's budget was spent by the smaller batches")
      continue
    share = now + (deadline - now) / (len(shapes.decode_batches) - i)
    out[f"batch_{batch}"] = {"status": "measured", **model_decode.measure_decode(
        policy, mesh, batch, prompt_len=shapes.prompt_len, new_tokens=shapes.new_tokens,
        repeats=shapes.decode_repeats, hbm=limits["hbm_bytes_per_s"], deadline=share)}
    log(f"decode batch {batch}: {figures_line(out[f'batch_{batch}'])}")
  return out


def online_run_config(shapes: Shapes):
  """configs/tiny.py (built-in tokenizer and environment) turned online at the part's shape."""
  config = tiny_config.get_config()
  config.model.preset = shapes.online_preset
  config.model.param_dtype = config.model.compute_dtype = shapes.dtype
  config.mesh = {"data": 1, "fsdp": 1, "tensor": 1}
  config.rollout.mode = "online"
  config.rollout.width_bucket = shapes.online_context  # one prompt width: one prefill compile
  config.batch.update({"size": shapes.online_rows, "minibatch_size": shapes.online_minibatch,
                       "grad_accum_steps": shapes.online_accum})
  config.ppo.epochs = shapes.online_epochs
  config.data.max_context_len = shapes.online_context
  config.data.max_response_len = shapes.online_response
  config.data.min_bucket_len = shapes.online_context + shapes.online_response  # one update width
  config.env.num_tasks = shapes.online_tasks
  config.env.max_steps = shapes.online_max_steps
  return parse_run_config(config)


def run_online(shapes: Shapes, mesh, limits, deadline: float) -> dict[str, Any]:
  run = online_run_config(shapes)
  tokenizer = load_tokenizer()
  rows = run.batch.size
  # The source reads only the policy's architecture here; the variables come with each batch.
  architecture = Policy(config=policy_init.random_model_config(run, len(tokenizer)), variables={},
                        lora=run.model.lora.lora_config())
  source = make_online_source(run, tokenizer, architecture, local_rows=slice(0, rows))
  bench = train_ppo_update.build_update(run, len(tokenizer), mesh, source.keys)
  iterations: list[dict[str, Any]] = []
  for index in range(shapes.online_iterations):
    # The first iteration compiles; at least one more is timed, then as many as fit.
    if len(iterations) >= 2 and time.perf_counter() + iterations[-1]["iteration_s"] > deadline:
      break
    start = time.perf_counter()
    local, _ = source.batch(0, index, bench.state.policy)
    rollout_s = time.perf_counter() - start
    start = time.perf_counter()
    metrics = jax.device_get(train_ppo_update.update_once(bench, device_batch(local, mesh, rows),
                                                          jax.random.key(index)))
    update_s = time.perf_counter() - start
    width = local["input_ids"].shape[1]
    iterations.append({"rollout_s": rollout_s, "update_s": update_s, "iteration_s": rollout_s + update_s,
                       "width": width, "action_tokens": int(local["action_mask"].sum()),
                       "real_tokens": int(local["attention_mask"].sum()),
                       "mean_steps": float(np.mean(local["num_steps"])), "loss": float(metrics["loss"])})
    log(f"online iteration {index}: rollout {rollout_s:.2f} s, update {update_s:.2f} s"
        f"{' (compiling)' if index == 0 else ''}")
  first, timed = iterations[0], iterations[1:]
  rollout_s = float(np.median([it["rollout_s"] for it in timed]))
  update_s = float(np.median([it["update_s"] for it in timed]))
  width = timed[-1]["width"]
  action_tokens = float(np.mean([it["action_tokens"] for it in timed]))
  update = train_ppo_update.update_figures(bench, update_s, rows, width, limits["peak_flops"])
  return {"preset": run.model.preset, "params": bench.model_config.num_params(), "dtype": shapes.dtype,
          "episodes": rows, "max_steps": run.env.max_steps, "max_context_len": run.data.max_context_len,
          "max_response_len": run.data.max_response_len, "epochs": run.ppo.epochs, "width": width,
          "iterations": len(timed), "first_iteration_s": first["iteration_s"],
          "first_rollout_s": first["rollout_s"], "first_update_s": first["update_s"],
          "iteration_s": rollout_s + update_s, "rollout_s": rollout_s,
          "rollout_action_tokens_per_s": action_tokens / rollout_s,
          "mean_steps": float(np.mean([it["mean_steps"] for it in timed])),
          "update_s": update_s, "update_tokens_per_s": update["tokens_per_s"], "mfu": update["mfu"],
          "update_tflops_per_device": update["tflops_per_device"], "loss": timed[-1]["loss"]}


RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "train_step": run_train_step, "ppo_update": run_ppo_update, "decode": run_decode, "online_iteration": run_online}


def skip_reason(budget: float, left: float) -> str | None:
  """Why a part with `budget` seconds is not started with `left` seconds of the suite's time, or None."""
  if budget <= 0:
    return f"budget {budget:g} s"
  if left < budget / 4:
    return f"the suite's time is spent: {max(left, 0):.0f} s left, under a quarter of this part's {budget:g} s budget"
  return None


def skipped(reason: str) -> dict[str, str]:
  return {"status": "skipped", "reason": reason}


def release() -> None:
  """Drops what the previous measurement left on the device (states, compiled programs)."""
  gc.collect()
  jax.clear_caches()


def figures_line(figures: dict[str, Any]) -> str:
  shown = []
  for key in ("tokens_per_s", "mfu", "fraction_of_bound", "rollout_action_tokens_per_s", "update_tokens_per_s",
              "iteration_s", "compile_s", "steps"):
    value = figures.get(key)
    if value is None:
      continue
    shown.append(f"{key} {100 * value:.1f}%" if key in ("mfu", "fraction_of_bound") else f"{key} {value:,.4g}")
  return ", ".join(shown)


def run_suite(options: SuiteOptions) -> dict[str, Any]:
  """Runs every part within its budget, writes the JSON and markdown, returns the results."""
  shapes = SMOKE if options.smoke else DEVICE
  start = time.perf_counter()
  budgets = options.budgets()
  suite_deadline = start + sum(budgets.values())
  device = jax.devices()[0]
  mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, [device])
  limits = device_limits(device, shapes)
  hbm = limits["hbm_bytes_per_s"]
  log(f"device {device.device_kind} ({device.platform}); peak {limits['peak_flops'] / 1e12:.3f} TFLOP/s,"
      f" HBM {f'{hbm / 1e12:.2f} TB/s' if hbm else 'unknown'}; budgets {budgets} s"
      f"{' (smoke shapes)' if options.smoke else ''}")
  # Written after every part: a suite stopped from outside (a timeout) leaves what it measured.
  parts: dict[str, Any] = {name: {"status": "not_run", "reason": "the suite stopped before this part ended"}
                           for name in PARTS}
  out = pathlib.Path(options.out_dir)
  stem = out / f"device_suite_{slug(device.device_kind)}{'_smoke' if options.smoke else ''}"
  for name in PARTS:
    now = time.perf_counter()
    budget, left = budgets[name], suite_deadline - now
    reason = skip_reason(budget, left)
    if reason:
      parts[name] = skipped(reason)
    else:
      log(f"{name}: start (budget {budget:g} s, {left:.0f} s of the suite left)")
      try:
        parts[name] = {"status": "measured", **RUNNERS[name](shapes, mesh, limits, min(now + budget, suite_deadline))}
      except Exception as error:  # noqa: BLE001 (the suite reports the failure and goes on to the next part)
        parts[name] = {"status": "failed", "error": f"{type(error).__name__}: {str(error).splitlines()[0][:500]}"}
      parts[name]["seconds"] = time.perf_counter() - now
      release()
    parts[name]["budget_s"] = budget
    if name in TARGETS:
      parts[name]["target"] = {TARGETS[name][0]: TARGETS[name][1]}
    log(f"{name}: {parts[name]['status']}"
        + (f" in {parts[name]['seconds']:.1f} s" if "seconds" in parts[name] else "")
        + (f": {parts[name].get('reason') or parts[name].get('error')}" if parts[name]["status"] != "measured"
           else (f": {figures_line(parts[name])}" if figures_line(parts[name]) else "")))
    suite = {"device": device.device_kind, "platform": device.platform, "jax": jax.__version__,
             "host": f"{platform.machine()}, {os.cpu_count()} CPUs", "smoke": options.smoke,
             "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "command": " ".join([os.path.basename(sys.argv[0]) or "device_suite.py", *sys.argv[1:]]),
             "wall_s": time.perf_counter() - start, "budgets_s": budgets, **limits}
    results = plain({"suite": suite, "parts": parts})
    out.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
    stem.with_suffix(".md").write_text(markdown(results))
  results["files"] = [str(stem.with_suffix(".json")), str(stem.with_suffix(".md"))]
  return results


def slug(device_kind: str) -> str:
  return re.sub(r"[^a-z0-9]+", "_", device_kind.lower()).strip("_") or "device"


def plain(value: Any) -> Any:
  """JSON-ready: numpy scalars as Python numbers, tuples as lists, NaN and inf as None."""
  if isinstance(value, dict):
    return {k: plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [plain(v) for v in value]
  if isinstance(value, (np.floating, np.integer)):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def summary(results: dict[str, Any]) -> dict[str, Any]:
  """Part -> its key figures (or why it was not measured): the suite's last stdout line."""
  keys = ("tokens_per_s", "mfu", "fraction_of_bound", "bound_tokens_per_s", "rollout_action_tokens_per_s",
          "update_tokens_per_s", "iteration_s")

  def brief(part: dict[str, Any]) -> dict[str, Any]:
    if part.get("status") in ("skipped", "failed"):
      return {part["status"]: part.get("reason") or part.get("error")}
    picked = {k: round(v, 4) for k, v in part.items() if k in keys and isinstance(v, (int, float))}
    nested = {k: brief(v) for k, v in part.items() if isinstance(v, dict) and "status" in v}
    return {**picked, **nested}

  return {"device": results["suite"]["device"], "wall_s": round(results["suite"]["wall_s"], 1),
          **{name: brief(part) for name, part in results["parts"].items()}}


def _percent(value: float | None) -> str:
  return "n/a" if value is None else f"{100 * value:.1f}%"


def _number(value: float | None, digits: int = 0) -> str:
  return "n/a" if value is None else f"{value:,.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
  suite, parts = results["suite"], results["parts"]
  hbm = suite["hbm_bytes_per_s"]
  lines = [f"# Device suite: {suite['device']}{' (smoke shapes)' if suite['smoke'] else ''}", "",
           f"`{suite['command']}` on {suite['date']}, jax {suite['jax']}, {suite['host']};"
           f" {suite['wall_s']:.0f} s wall. Peak: {suite['peak_flops'] / 1e12:.3f} TFLOP/s ({suite['peak_source']});"
           f" HBM: {_number(hbm / 1e9) + ' GB/s' if hbm else 'unknown'}.", "",
           "| part | measured | target | verdict |", "|---|---|---|---|"]

  def verdict(value: float | None, target: float, *, mfu: bool = True) -> str:
    if mfu and suite["peak_measured"]:
      return "n/a (no device peak)"
    if value is None:
      return "unknown"
    return "meets" if value >= target else "below"

  def not_measured(part: dict[str, Any]) -> str:
    return f"{part['status']}: {part.get('reason') or part.get('error')}"

  train = parts["train_step"]
  if train["status"] == "measured":
    lines.append(f"| train step, {train['preset']} {train['batch']} x {train['seq_len']}, {train['dtype']}, remat"
                 f" {train['remat']} | {_percent(train['mfu'])} MFU, {_number(train['tokens_per_s'])} tokens/s"
                 f" ({train['step_s'] * 1e3:.1f} ms/step, {train['steps']} steps, compile {train['compile_s']:.0f} s)"
                 f" | >= 45% MFU | {verdict(train['mfu'], 0.45)} |")
  else:
    lines.append(f"| train step | {not_measured(train)} | >= 45% MFU | - |")
  ppo = parts["ppo_update"]
  for trainable in ("lora", "full"):
    sub = ppo.get(trainable) if ppo["status"] == "measured" else ppo
    if sub and sub["status"] == "measured":
      lines.append(f"| PPO update ({trainable}), {sub['rows']} x {sub['seq_len']}, {sub['epochs']} epochs,"
                   f" micro-batches of {sub['minibatch']} | {_percent(sub['mfu'])} MFU,"
                   f" {_number(sub['tokens_per_s'])} tokens/s ({sub['update_s'] * 1e3:.0f} ms/update, {sub['steps']}"
                   f" updates, compile {sub['compile_s']:.0f} s) | >= 40% MFU | {verdict(sub['mfu'], 0.40)} |")
    else:
      lines.append(f"| PPO update ({trainable}) | {not_measured(sub)} | >= 40% MFU | - |")
  decode = parts["decode"]
  batches = [k for k in decode if k.startswith("batch_")] if decode["status"] == "measured" else ["batch"]
  for key in batches:
    sub = decode.get(key) if decode["status"] == "measured" else decode
    target = ">= 50% of bound" if key == "batch_1" else "-"
    if sub["status"] == "measured":
      bound = sub["bound_tokens_per_s"]
      lines.append(f"| decode batch {sub['batch']}, {decode['preset']}, prompt {sub['prompt_len']} |"
                   f" {_number(sub['tokens_per_s'], 1)} tokens/s ({_number(sub['ms_per_step'], 2)} ms/step);"
                   f" bound {_number(bound, 1) if bound else 'unknown'} ({_percent(sub['fraction_of_bound'])}) |"
                   f" {target} | {verdict(sub['fraction_of_bound'], 0.5, mfu=False) if key == 'batch_1' else '-'} |")
    else:
      lines.append(f"| decode {key.replace('_', ' ')} | {not_measured(sub)} | {target} | - |")
  online = parts["online_iteration"]
  if online["status"] == "measured":
    lines.append(f"| online iteration, {online['preset']}, {online['episodes']} episodes x <= {online['max_steps']}"
                 f" actions of <= {online['max_response_len']} tokens | {online['iteration_s']:.2f} s/iteration:"
                 f" rollout {online['rollout_s']:.2f} s ({_number(online['rollout_action_tokens_per_s'])} action"
                 f" tokens/s), update {online['update_s']:.2f} s ({_number(online['update_tokens_per_s'])} tokens/s,"
                 f" {_percent(online['mfu'])} MFU); {online['iterations']} iterations after a first of"
                 f" {online['first_iteration_s']:.0f} s | - | - |")
  else:
    lines.append(f"| online iteration | {not_measured(online)} | - | - |")
  lines += ["", "Budgets (s): " + ", ".join(f"{k} {v:g}" for k, v in suite["budgets_s"].items())
            + "; seconds used: " + ", ".join(f"{k} {p['seconds']:.0f}" for k, p in parts.items() if "seconds" in p)
            + ". MFU counts model FLOPs (`trainer.flops`), no rematerialisation.", ""]
  return "\n".join(lines)


def define_flags() -> None:
  defaults = SuiteOptions()
  flags.DEFINE_bool("smoke", defaults.smoke, "Every part at toy shapes (tiny preset, contexts of 32-64, 1-2 steps).")
  flags.DEFINE_string("out_dir", defaults.out_dir, "Where the JSON and markdown go.")
  flags.DEFINE_float("budget_train_s", defaults.budget_train_s, "Seconds for the train step (0 skips it).")
  flags.DEFINE_float("budget_ppo_s", defaults.budget_ppo_s, "Seconds for the PPO updates, LoRA and full.")
  flags.DEFINE_float("budget_decode_s", defaults.budget_decode_s, "Seconds for decode at each batch size.")
  flags.DEFINE_float("budget_online_s", defaults.budget_online_s, "Seconds for the online iterations.")


# What tests/conftest.py sets: XLA's CPU compiler without its expensive passes halves the
# compilation that is nearly all of a smoke run (toy programs run in microseconds).
FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")


def main(argv):
  del argv
  f = flags.FLAGS
  if f.smoke:  # before the first computation starts the backend
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *FAST_COMPILE_FLAGS]).strip()
  results = run_suite(SuiteOptions(smoke=f.smoke, out_dir=f.out_dir, budget_train_s=f.budget_train_s,
                                   budget_ppo_s=f.budget_ppo_s, budget_decode_s=f.budget_decode_s,
                                   budget_online_s=f.budget_online_s))
  log(f"wrote {', '.join(results['files'])}")
  print(json.dumps(summary(results), allow_nan=False))


if __name__ == "__main__":
  define_flags()
  app.run(main)
