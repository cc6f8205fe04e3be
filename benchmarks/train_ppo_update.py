"""PPO update throughput, MFU, and where the time goes.

    PYTHONPATH=. python benchmarks/train_ppo_update.py          # ~1B (llama3_2_1b), 4096 tokens/row, bf16, LoRA
    PYTHONPATH=. python benchmarks/train_ppo_update.py --preset=tiny --seq_len=256 --dtype=float32 \
        --remat=none --mesh=data=1 --steps=3                    # the CPU smoke size

The update is the trainer's own (`trainer.updates.ppo`): the paper's batch of 8 rows in
micro-batches of 2 with 4 accumulation steps, 4 PPO epochs, LoRA r 8 on all projections
(`--trainable=full` for full fine-tuning with a frozen reference copy). Rows are synthetic
step-grained rows (alternating 192-token observations and 64-token actions, a reward per
step) so every stage does its real amount of work.

Timed separately (median of `--steps` runs after a compile/warm-up run), each jitted on
its own with the state's shardings:
  host -> device    the numpy batch to global arrays on the mesh (`device_batch`)
  forwards          rollout statistics: policy log-probs + values, reference log-probs
  rewards + GAE     placement, KL penalty, GAE, whitening
  PPO passes        epochs x (forward + backward + optimizer step) over the micro-batches;
                    backward + optimizer ~= passes - epochs x (forwards / 2)
  device -> host    the metrics back to the host
and the whole fused update (what train.py runs; `build_update` + `measure_update` without the
command line, as `device_suite.py` runs it). Tokens/s counts padded tokens of the
batch per update; MFU uses `trainer.flops.ppo_update_flops` (formula in that module).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from jax.sharding import Mesh

from benchmarks.timing import timed_runs
from steptool_jax.config.run import RunConfig, base_config, parse_run_config
from steptool_jax.models.config import LoraConfig, ModelConfig
from steptool_jax.parallel import make_mesh, replicated, sharding_context
from steptool_jax.parallel.mesh import resolve_axis_sizes
from steptool_jax.rl.kl_controller import make_kl_controller
from steptool_jax.trainer import flops, policy_init
from steptool_jax.trainer.algorithms import PPO
from steptool_jax.trainer.sources.batches import batch_shardings, device_batch
from steptool_jax.trainer import optimizer
from steptool_jax.trainer.updates.ppo import make_ppo_stages, make_ppo_update
from steptool_jax.trainer.state import TrainState, create_train_state, state_shardings

def synthetic_batch(rows: int, seq_len: int, vocab: int, *, observation: int = 192, action: int = 64) -> dict:
  """Step-grained rows: a prompt/observation of `observation` tokens, then an action of
  `action` tokens, repeated to `seq_len`; one reward per step."""
  rng = np.random.default_rng(0)
  period = observation + action
  position = np.arange(seq_len)
  is_action = (position % period) >= observation
  step_ids = np.where(is_action, position // period, -1).astype(np.int32)
  steps = int(step_ids.max()) + 1
  return {
      "input_ids": rng.integers(3, vocab, (rows, seq_len), dtype=np.int32),
      "attention_mask": np.ones((rows, seq_len), np.int32),
      "action_mask": np.broadcast_to(is_action.astype(np.int32), (rows, seq_len)).copy(),
      "step_ids": np.broadcast_to(step_ids, (rows, seq_len)).copy(),
      "step_rewards": rng.random((rows, steps)).astype(np.float32),
      "num_steps": np.full(rows, steps, np.int32),
      "behaviour_logp": np.where(is_action, -1.0, 0.0).astype(np.float32) * np.ones((rows, 1), np.float32),
  }


def ppo_config(*, preset_name: str = "llama3_2_1b", batch: int = 8, minibatch: int = 2, accum: int = 4,
               epochs: int = 4, trainable: str = "lora", old_logp: str = "recompute", critic: str = "shared",
               dtype: str = "bfloat16", remat: str = "full", attention: str = "auto",
               logits_chunk: int = 1024) -> ml_collections.ConfigDict:
  """The run config of the measured update (`base_config` with these settings)."""
  config = base_config()
  config.model.preset = preset_name
  config.model.param_dtype = config.model.compute_dtype = dtype
  config.model.remat = remat
  config.model.attention_impl = attention if attention != "auto" else (
      "cudnn" if jax.devices()[0].platform == "gpu" else "xla")
  config.model.logits_chunk = logits_chunk
  config.model.lora.enabled = trainable == "lora"
  config.batch.update({"size": batch, "minibatch_size": minibatch, "grad_accum_steps": accum})
  config.ppo.epochs = epochs
  config.ppo.old_logp = old_logp
  config.ppo.critic = critic
  config.rollout.mode = "online"  # behaviour log-probs come from rollouts (the batch here is synthetic)
  return config


@dataclasses.dataclass
class PpoBench:
  """A train state on the mesh and the trainer's jitted update for it (state donated)."""

  run: RunConfig
  mesh: Mesh
  model_config: ModelConfig
  lora: LoraConfig | None
  state: TrainState
  update: Callable[..., Any]
  make_stages: Callable[[], Any]  # the update's stages, to time them one by one


def build_update(run: RunConfig, vocab_size: int, mesh: Mesh, batch_keys: tuple[str, ...]) -> PpoBench:
  """The run's initial policy (random init for presets) in a train state, and the update as
  `train.py` jits it for batches with `batch_keys`."""
  policy = policy_init.initial_policy(run, vocab_size, mesh)
  model_config, lora = policy.config, policy.lora
  tx = optimizer.make_optimizer(run.optim, 1000)
  keys = PPO.trainable_collections(run)
  critic = policy_init.initial_critic(run, policy, mesh)
  critic_tx = None if critic is None else optimizer.make_optimizer(run.optim, 1000)
  reward = run.reward
  create = functools.partial(
      create_train_state, optimizer=tx, trainable_keys=keys, master_dtype=jnp.float32, keep_reference=lora is None,
      kl=make_kl_controller(reward.kl_controller, reward.init_kl_coef, reward.kl_target, reward.kl_horizon),
      critic_optimizer=critic_tx)
  abstract = jax.eval_shape(create, policy.variables, jax.random.key(0), critic)
  shardings = state_shardings(abstract, model_config=model_config, lora=lora, mesh=mesh, optimizer=tx,
                              trainable_keys=keys, critic_optimizer=critic_tx)
  with sharding_context(mesh):
    state = jax.jit(create, out_shardings=shardings)(policy.variables, jax.random.key(0), critic)
  update = jax.jit(make_ppo_update(model_config, lora, run, tx, keys, critic_tx),
                   in_shardings=(shardings, batch_shardings(batch_keys, mesh), replicated(mesh)),
                   out_shardings=(shardings, replicated(mesh)), donate_argnums=(0,))
  return PpoBench(run=run, mesh=mesh, model_config=model_config, lora=lora, state=state, update=update,
                  make_stages=lambda: make_ppo_stages(model_config, lora, run, tx, keys, critic_tx))


def update_once(bench: PpoBench, batch: Mapping[str, jax.Array], key: jax.Array) -> dict[str, jax.Array]:
  """One fused update; the new state replaces the bench's (the old one is donated)."""
  with sharding_context(bench.mesh):
    bench.state, metrics = bench.update(bench.state, batch, key)
  return metrics


def update_figures(bench: PpoBench, seconds: float, rows: int, seq_len: int,
                   peak_flops: float | None) -> dict[str, Any]:
  """Tokens/s (padded tokens of the batch) and MFU (`trainer.flops.ppo_update_flops`) of one update."""
  step_flops = PPO.step_flops(bench.run, bench.model_config, bench.lora, seq_len)
  devices = bench.mesh.devices.size
  return {"update_s": seconds, "tokens_per_s": rows * seq_len / seconds, "flops_per_update": step_flops,
          "tflops_per_device": step_flops / seconds / devices / 1e12,
          "mfu": flops.mfu(step_flops, seconds, devices, peak_flops)}


def measure_update(bench: PpoBench, local: Mapping[str, np.ndarray], *, steps: int, peak_flops: float | None,
                   deadline: float | None = None) -> dict[str, Any]:
  """Compiles and times the fused update on the numpy batch `local` (`steps` runs, fewer when
  `deadline` comes first)."""
  rows, seq_len = local["input_ids"].shape
  batch = device_batch(dict(local), bench.mesh, rows)
  timing = timed_runs(lambda: update_once(bench, batch, jax.random.key(2)), steps=steps, deadline=deadline)
  return {"device": jax.devices()[0].device_kind, "devices": bench.mesh.devices.size,
          "preset": bench.run.model.preset, "params": bench.model_config.num_params(),
          "trainable": "lora" if bench.lora is not None else "full", "rows": rows, "seq_len": seq_len,
          "epochs": bench.run.ppo.epochs, "minibatch": bench.run.batch.minibatch_size,
          "accum": bench.run.batch.grad_accum_steps, "compile_s": timing.first_s, "steps": len(timing.times),
          **update_figures(bench, timing.median_s, rows, seq_len, peak_flops)}


def define_flags() -> None:
  flags.DEFINE_string("preset", "llama3_2_1b", "Model preset (tiny: vocabulary 512).")
  flags.DEFINE_integer("seq_len", 4096, "Tokens per row.")
  flags.DEFINE_integer("batch", 8, "Rows per PPO update (global).")
  flags.DEFINE_integer("minibatch", 2, "Rows per forward/backward pass.")
  flags.DEFINE_integer("accum", 4, "Micro-batches per optimizer step.")
  flags.DEFINE_integer("epochs", 4, "PPO epochs per batch.")
  flags.DEFINE_enum("trainable", "lora", ["lora", "full"], "LoRA (paper) or full fine-tuning.")
  flags.DEFINE_enum("old_logp", "recompute", ["recompute", "behaviour"],
                    "ppo.old_logp: recompute the old log-probs, or take the rollout's (skips a forward).")
  flags.DEFINE_enum("critic", "shared", ["shared", "separate"], "ppo.critic.")
  flags.DEFINE_string("dtype", "bfloat16", "Frozen-weight and compute dtype.")
  flags.DEFINE_enum("remat", "full", ["none", "full", "dots"], "Per-layer rematerialisation.")
  flags.DEFINE_enum("attention", "auto", ["auto", "xla", "cudnn"], "auto: cudnn on NVIDIA GPUs.")
  flags.DEFINE_integer("logits_chunk", 1024, "Time chunk of the log-prob computation.")
  flags.DEFINE_integer("steps", 5, "Timed runs of each stage (after one warm-up run).")
  flags.DEFINE_string("mesh", "data=1,fsdp=-1,tensor=1", "Mesh axis sizes.")
  flags.DEFINE_float("peak_tflops", 0.0, "Per-device dense bf16 peak (0: look the device up).")


def main(argv):
  del argv
  f = flags.FLAGS
  config = ppo_config(preset_name=f.preset, batch=f.batch, minibatch=f.minibatch, accum=f.accum, epochs=f.epochs,
                      trainable=f.trainable, old_logp=f.old_logp, critic=f.critic, dtype=f.dtype, remat=f.remat,
                      attention=f.attention, logits_chunk=f.logits_chunk)
  run = parse_run_config(config)
  sizes = resolve_axis_sizes({k: int(v) for k, v in (item.split("=") for item in f.mesh.split(","))},
                             jax.device_count())
  mesh = make_mesh(sizes)
  local = synthetic_batch(f.batch, f.seq_len, policy_init.random_model_config(run, 512).vocab_size)
  bench = build_update(run, 512, mesh, tuple(local))
  stages, steps = bench.make_stages(), f.steps
  state = bench.state

  with sharding_context(mesh):
    h2d = timed_runs(lambda: device_batch(local, mesh, f.batch), steps=steps)
    batch = h2d.out
    rollout = jax.jit(stages.rollout_statistics)
    forwards = timed_runs(lambda: rollout(state, batch), steps=steps)
    advantages = jax.jit(stages.advantages)
    gae = timed_runs(lambda: advantages(state, batch, forwards.out), steps=steps)
    optimize = jax.jit(stages.optimize)
    passes = timed_runs(lambda: optimize(state, batch, forwards.out, gae.out, jax.random.key(1)), steps=steps)
    del state
    fused = timed_runs(lambda: update_once(bench, batch, jax.random.key(2)), steps=steps)
    d2h = timed_runs(lambda: jax.device_get(fused.out), steps=steps)

  peak = flops.peak_flops_per_device(f.peak_tflops)
  figures = update_figures(bench, fused.median_s, f.batch, f.seq_len, peak)
  print(f"device: {jax.devices()[0].device_kind} x{mesh.devices.size}  mesh {sizes}  model: {f.preset}"
        f" ({bench.model_config.num_params() / 1e6:,.1f}M parameters)  dtype {f.dtype}  remat {f.remat}"
        f"  attention {run.model.attention_impl}  trainable {f.trainable}  old_logp {f.old_logp}"
        f"  critic {f.critic}")
  print(f"batch {f.batch} x {f.seq_len} tokens, micro-batches of {f.minibatch}, accumulation"
        f" {f.accum}, {f.epochs} PPO epochs; median of {steps} runs")
  print(f"PPO update {fused.median_s * 1e3:.1f} ms: {figures['tokens_per_s']:,.0f} tokens/s,"
        f" {figures['tflops_per_device']:.3f} TFLOP/s per device"
        + (f", MFU {100 * figures['mfu']:.1f}% (peak {peak / 1e12:.0f})" if peak else
           ", MFU: unknown peak for this device (--peak_tflops)"))
  backward = passes.median_s - f.epochs * forwards.median_s / 2
  rows = [("host -> device", h2d.median_s), ("forwards (policy + reference)", forwards.median_s),
          ("rewards + GAE", gae.median_s), ("PPO passes (fwd + bwd + AdamW)", passes.median_s),
          ("  of which backward + optimizer (est.)", backward), ("device -> host (metrics)", d2h.median_s)]
  staged = h2d.median_s + forwards.median_s + gae.median_s + passes.median_s + d2h.median_s
  for name, seconds in rows:
    print(f"  {name:<40} {seconds * 1e3:10.2f} ms  {100 * seconds / staged:5.1f}%")
  print(f"  {'sum of stages':<40} {staged * 1e3:10.2f} ms  (fused update {fused.median_s * 1e3:.2f} ms)")


if __name__ == "__main__":
  define_flags()
  app.run(main)
