"""Rollout throughput with and without the KV cache kept across an episode's turns.

    PYTHONPATH=. python benchmarks/rollout_throughput.py --preset=tiny
    PYTHONPATH=. python benchmarks/rollout_throughput.py --preset=smollm2_135m --episodes=4 --max_new_tokens=16
    PYTHONPATH=. python benchmarks/rollout_throughput.py --smoke          # tiny shapes, seconds

What it measures: `run_episodes` (the loop of online rollouts and evaluation) playing
`--episodes` tasks of the built-in environment in lock-step with a random-weight model
(`--preset`; `tiny` takes the built-in tokenizer's vocabulary) acting through
`rollout.model_policy`, once with `reuse_cache=True` (each episode keeps its cache; an
action prefills only the tokens its context adds) and once with `reuse_cache=False` (every
action re-prefills the whole dialogue). Tokens/s = generated action tokens / wall seconds of
the whole rollout (prefill, decode, the host-side bookkeeping, the environment and the
tokenizer). Compilation is excluded: each path plays the rollout once untimed first, then
`--repeats` timed times (the best is kept); with `--nowarmup` (large models on a CPU, where
one rollout takes minutes) each path plays once and the compilation time JAX reports
(tracing, lowering, XLA compile) is subtracted from the wall time.

Forcing long episodes honestly: random weights write no valid action and rarely a stop
token, so the policy gets no stop sequences at all (every action is exactly
`--max_new_tokens` tokens) and the environment answers each action with its error
observation until its step limit (`EnvConfig.max_steps = --steps`). Every episode thus runs
`--steps` turns, each context = the task prompt + the earlier actions and error
observations, as a policy that has not learned the format sees it. Decoding is greedy, so
both paths must produce identical trajectories (same action tokens, texts, outcomes;
log-probs to float rounding), which the script checks and reports.

The last line of stdout is one JSON object with `tokens_per_s_reuse`,
`tokens_per_s_reprefill`, `speedup`, `identical` and the details.
"""

from __future__ import annotations

import json
import os
import platform
import time

import jax
import numpy as np
from absl import app, flags

from steptool_jax.envs import episode as env
from steptool_jax.envs.builtin_tokenizer import load_tokenizer
from steptool_jax.envs.tasks import generate_tasks
from steptool_jax.models import Policy, SamplingConfig, preset
from steptool_jax.models.config import tiny
from steptool_jax.models.policy import init_base_params
from steptool_jax.rollout.episodes import run_episodes
from steptool_jax.rollout.policies import model_policy, width_buckets
from steptool_jax.rollout.stopping import ActionStops

_PRESET = flags.DEFINE_string("preset", "tiny", "Model preset (random weights): tiny, smollm2_135m, ...")
_EPISODES = flags.DEFINE_integer("episodes", 16, "Episodes played in lock-step (one batch).")
_STEPS = flags.DEFINE_integer("steps", 6, "Turns per episode (the environment's step limit).")
_NEW = flags.DEFINE_integer("max_new_tokens", 32, "Tokens per action (no stops: every action has this many).")
_CONTEXT = flags.DEFINE_integer("max_context_len", 1024, "Context limit (left truncation past it).")
_WIDTH = flags.DEFINE_integer("width_bucket", 128, "Re-prefill: contexts are left-padded to a multiple of this.")
_DTYPE = flags.DEFINE_string("dtype", "float32", "Parameter, compute and cache dtype.")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Timed rollouts per path (best is kept).")
_WARMUP = flags.DEFINE_bool("warmup", True, "Play once untimed first (else subtract the measured compile time).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny shapes: 4 episodes, 3 steps, 8 tokens, context 512 (one width).")


def build_policy(name: str, vocab_size: int, dtype: str) -> Policy:
  if name == "tiny":
    config = tiny(vocab_size=vocab_size, param_dtype=dtype, dtype=dtype)
  else:
    config = preset(name, param_dtype=dtype, dtype=dtype)
    if config.vocab_size < vocab_size:
      raise ValueError(f"--preset={name}: vocabulary {config.vocab_size} smaller than the tokenizer's {vocab_size}")
  return Policy(config=config, variables={"params": init_base_params(config, jax.random.key(0))})


_COMPILE_SECONDS = [0.0]


def _count_compilation(event: str, seconds: float, **kwargs) -> None:
  del kwargs
  if event.startswith("/jax/core/compile/"):
    _COMPILE_SECONDS[0] += seconds


jax.monitoring.register_event_duration_secs_listener(_count_compilation)


def play(policy: Policy, tokenizer, tasks, *, reuse_cache: bool, steps: int, new_tokens: int,
         max_context_len: int, width_bucket: int):
  """One rollout of every task; returns (rollouts, seconds without compilation, compilation
  seconds, the policy's counters)."""
  acting = model_policy(policy, tokenizer, ActionStops(ends=(), turns=()),
                        SamplingConfig(max_new_tokens=new_tokens, pad_id=tokenizer.pad_token_id or 0),
                        jax.random.key(0), template="toolllama", max_batch=len(tasks),
                        widths=width_buckets(max_context_len, width_bucket), reuse_cache=reuse_cache)
  compiled, start = _COMPILE_SECONDS[0], time.perf_counter()
  rollouts = run_episodes(tasks, acting, tokenizer, bos_id=tokenizer.bos_token_id, max_context_len=max_context_len,
                          env_config=env.EnvConfig(max_steps=steps))
  compile_seconds = _COMPILE_SECONDS[0] - compiled
  return rollouts, time.perf_counter() - start - compile_seconds, compile_seconds, acting.stats


def compare(a, b) -> tuple[bool, float]:
  """Whether the trajectories are identical (log-probs to 1e-4), and the largest log-prob gap."""
  same, worst = len(a) == len(b), 0.0
  for x, y in zip(a, b):
    same &= x.prompt_ids == y.prompt_ids and x.outcomes == y.outcomes and len(x.actions) == len(y.actions)
    for p, q in zip(x.actions, y.actions):
      same &= (p.token_ids, p.text, p.stop) == (q.token_ids, q.text, q.stop)
      if len(p.logprobs) == len(q.logprobs):
        worst = max(worst, float(np.max(np.abs(np.subtract(p.logprobs, q.logprobs)), initial=0.0)))
  return bool(same and worst < 1e-4), worst


def main(argv):
  del argv
  name, episodes, steps, new_tokens, context = (_PRESET.value, _EPISODES.value, _STEPS.value, _NEW.value,
                                                _CONTEXT.value)
  width_bucket = _WIDTH.value
  if _SMOKE.value:  # one prompt width: few compilations
    name, episodes, steps, new_tokens, context, width_bucket = "tiny", 4, 3, 8, 512, 512
  tokenizer = load_tokenizer()
  policy = build_policy(name, len(tokenizer), _DTYPE.value)
  tasks = list(generate_tasks(max(40, 4 * episodes), seed=0)["train"])[:episodes]
  if len(tasks) < episodes:
    raise ValueError(f"--episodes={episodes}: the task split has only {len(tasks)} tasks")
  print(f"# device: {jax.devices()[0].device_kind} x{jax.device_count()} ({platform.machine()}, {os.cpu_count()} CPUs); "
        f"jax {jax.__version__}; load average {os.getloadavg()[0]:.2f}")
  print(f"# model: {name} ({policy.config.num_params() / 1e6:.1f}M params, {_DTYPE.value}), random weights; "
        f"{episodes} episodes x {steps} steps x {new_tokens} tokens/action; max_context_len {context}")
  results = {}
  for reuse in (True, False):
    kwargs = dict(reuse_cache=reuse, steps=steps, new_tokens=new_tokens, max_context_len=context,
                  width_bucket=width_bucket)
    compiling = 0.0
    if _WARMUP.value:
      _, _, compiling, _ = play(policy, tokenizer, tasks, **kwargs)  # compiles every shape it meets
    best, stats = float("inf"), {}
    for _ in range(_REPEATS.value):
      rollouts, seconds, compile_seconds, stats = play(policy, tokenizer, tasks, **kwargs)
      best, compiling = min(best, seconds), compiling + compile_seconds
    tokens = sum(len(a.token_ids) for r in rollouts for a in r.actions)
    results[reuse] = dict(rollouts=rollouts, seconds=best, tokens=tokens, stats=stats, compiling=compiling)
    label = "reuse   " if reuse else "reprefill"
    print(f"{label}: {best:8.2f} s  {tokens / best:10,.1f} tokens/s  (prefilled {stats['prefill_tokens']:,} of "
          f"{stats['context_tokens']:,} context tokens, {stats['padded_prefill']:,} slots with padding; "
          f"compilation {compiling:.1f} s, excluded)")
  identical, worst = compare(results[True]["rollouts"], results[False]["rollouts"])
  steps_played = [r.num_steps for r in results[True]["rollouts"]]
  reuse_tps = results[True]["tokens"] / results[True]["seconds"]
  reprefill_tps = results[False]["tokens"] / results[False]["seconds"]
  print(f"identical trajectories: {identical} (largest log-prob difference {worst:.2e}); "
        f"steps per episode {np.mean(steps_played):.2f}; speedup {reuse_tps / reprefill_tps:.2f}x")
  print(json.dumps({
      "preset": name, "dtype": _DTYPE.value, "episodes": episodes, "steps": steps, "max_new_tokens": new_tokens,
      "max_context_len": context, "mean_steps": float(np.mean(steps_played)),
      "tokens": results[True]["tokens"], "seconds_reuse": round(results[True]["seconds"], 3),
      "seconds_reprefill": round(results[False]["seconds"], 3), "tokens_per_s_reuse": round(reuse_tps, 1),
      "tokens_per_s_reprefill": round(reprefill_tps, 1), "speedup": round(reuse_tps / reprefill_tps, 3),
      "identical": identical, "max_logp_diff": worst,
      "prefill_tokens_reuse": results[True]["stats"]["prefill_tokens"],
      "prefill_tokens_reprefill": results[False]["stats"]["prefill_tokens"],
      "compile_seconds_reuse": round(results[True]["compiling"], 1),
      "compile_seconds_reprefill": round(results[False]["compiling"], 1), "warmup": _WARMUP.value,
      "device": jax.devices()[0].device_kind}))


if __name__ == "__main__":
  app.run(main)
