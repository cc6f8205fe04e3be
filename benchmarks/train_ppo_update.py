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
and the whole fused update (what train.py runs). Tokens/s counts padded tokens of the
batch per update; MFU uses `trainer.flops.ppo_update_flops` (formula in that module).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from steptool_jax.config.run import base_config, parse_run_config
from steptool_jax.parallel import make_mesh, replicated, sharding_context
from steptool_jax.parallel.mesh import resolve_axis_sizes
from steptool_jax.rl.kl_controller import make_kl_controller
from steptool_jax.trainer import flops, policy_init
from steptool_jax.trainer.algorithms import PPO
from steptool_jax.trainer.sources.batches import batch_shardings, device_batch
from steptool_jax.trainer import optimizer
from steptool_jax.trainer.updates.ppo import make_ppo_stages, make_ppo_update
from steptool_jax.trainer.state import create_train_state, state_shardings

_PRESET = flags.DEFINE_string("preset", "llama3_2_1b", "Model preset (tiny: vocabulary 512).")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 4096, "Tokens per row.")
_BATCH = flags.DEFINE_integer("batch", 8, "Rows per PPO update (global).")
_MINIBATCH = flags.DEFINE_integer("minibatch", 2, "Rows per forward/backward pass.")
_ACCUM = flags.DEFINE_integer("accum", 4, "Micro-batches per optimizer step.")
_EPOCHS = flags.DEFINE_integer("epochs", 4, "PPO epochs per batch.")
_TRAINABLE = flags.DEFINE_enum("trainable", "lora", ["lora", "full"], "LoRA (paper) or full fine-tuning.")
_OLD_LOGP = flags.DEFINE_enum("old_logp", "recompute", ["recompute", "behaviour"],
                              "ppo.old_logp: recompute the old log-probs, or take the rollout's (skips a forward).")
_CRITIC = flags.DEFINE_enum("critic", "shared", ["shared", "separate"], "ppo.critic.")
_DTYPE = flags.DEFINE_string("dtype", "bfloat16", "Frozen-weight and compute dtype.")
_REMAT = flags.DEFINE_enum("remat", "full", ["none", "full", "dots"], "Per-layer rematerialisation.")
_ATTENTION = flags.DEFINE_enum("attention", "auto", ["auto", "xla", "cudnn"], "auto: cudnn on NVIDIA GPUs.")
_CHUNK = flags.DEFINE_integer("logits_chunk", 1024, "Time chunk of the log-prob computation.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed runs of each stage (after one warm-up run).")
_MESH = flags.DEFINE_string("mesh", "data=1,fsdp=-1,tensor=1", "Mesh axis sizes.")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "Per-device dense bf16 peak (0: look the device up).")


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


def timed(fn, *args, steps: int) -> tuple[float, object]:
  """Median seconds of `fn(*args)` over `steps` runs after one warm-up (compile) run."""
  out = jax.block_until_ready(fn(*args))
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times)), out


def main(argv):
  del argv
  platform = jax.devices()[0].platform
  config = base_config()
  config.model.preset = _PRESET.value
  config.model.param_dtype = config.model.compute_dtype = _DTYPE.value
  config.model.remat = _REMAT.value
  config.model.attention_impl = _ATTENTION.value if _ATTENTION.value != "auto" else (
      "cudnn" if platform == "gpu" else "xla")
  config.model.logits_chunk = _CHUNK.value
  config.model.lora.enabled = _TRAINABLE.value == "lora"
  config.batch.update({"size": _BATCH.value, "minibatch_size": _MINIBATCH.value, "grad_accum_steps": _ACCUM.value})
  config.ppo.epochs = _EPOCHS.value
  config.ppo.old_logp = _OLD_LOGP.value
  config.ppo.critic = _CRITIC.value
  config.rollout.mode = "online"  # behaviour log-probs come from rollouts (the batch here is synthetic)
  run = parse_run_config(config)
  sizes = resolve_axis_sizes({k: int(v) for k, v in (item.split("=") for item in _MESH.value.split(","))},
                             jax.device_count())
  mesh = make_mesh(sizes)

  policy = policy_init.initial_policy(run, 512, mesh)
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
  stages = make_ppo_stages(model_config, lora, run, tx, keys, critic_tx)
  local = synthetic_batch(_BATCH.value, _SEQ_LEN.value, model_config.vocab_size)
  steps = _STEPS.value

  with sharding_context(mesh):
    state = jax.jit(create, out_shardings=shardings)(policy.variables, jax.random.key(0), critic)
    del policy, critic
    h2d_s, batch = timed(lambda: device_batch(local, mesh, _BATCH.value), steps=steps)
    rollout = jax.jit(stages.rollout_statistics)
    rollout_s, stats = timed(rollout, state, batch, steps=steps)
    advantages = jax.jit(stages.advantages)
    advantages_s, estimate = timed(advantages, state, batch, stats, steps=steps)
    optimize = jax.jit(stages.optimize)
    optimize_s, _ = timed(optimize, state, batch, stats, estimate, jax.random.key(1), steps=steps)
    update = jax.jit(make_ppo_update(model_config, lora, run, tx, keys, critic_tx),
                     in_shardings=(shardings, batch_shardings(tuple(local), mesh), replicated(mesh)),
                     out_shardings=(shardings, replicated(mesh)), donate_argnums=(0,))
    holder = {"state": state}

    def full_update():
      holder["state"], metrics = update(holder["state"], batch, jax.random.key(2))
      return metrics

    update_s, metrics = timed(full_update, steps=steps)
    d2h_s, _ = timed(lambda: jax.device_get(metrics), steps=steps)

  tokens = _BATCH.value * _SEQ_LEN.value
  step_flops = flops.ppo_update_flops(model_config, lora, rows=_BATCH.value, seq_len=_SEQ_LEN.value,
                                      epochs=_EPOCHS.value)
  peak = flops.peak_flops_per_device(_PEAK.value)
  devices = mesh.devices.size
  print(f"device: {jax.devices()[0].device_kind} x{devices}  mesh {sizes}  model: {_PRESET.value}"
        f" ({model_config.num_params() / 1e6:,.1f}M parameters)  dtype {_DTYPE.value}  remat {_REMAT.value}"
        f"  attention {run.model.attention_impl}  trainable {_TRAINABLE.value}  old_logp {_OLD_LOGP.value}"
        f"  critic {_CRITIC.value}")
  print(f"batch {_BATCH.value} x {_SEQ_LEN.value} tokens, micro-batches of {_MINIBATCH.value}, accumulation"
        f" {_ACCUM.value}, {_EPOCHS.value} PPO epochs; median of {steps} runs")
  print(f"PPO update {update_s * 1e3:.1f} ms: {tokens / update_s:,.0f} tokens/s,"
        f" {step_flops / update_s / devices / 1e12:.3f} TFLOP/s per device"
        + (f", MFU {100 * step_flops / (update_s * devices * peak):.1f}% (peak {peak / 1e12:.0f})" if peak else
           ", MFU: unknown peak for this device (--peak_tflops)"))
  backward = optimize_s - _EPOCHS.value * rollout_s / 2
  rows = [("host -> device", h2d_s), ("forwards (policy + reference)", rollout_s), ("rewards + GAE", advantages_s),
          ("PPO passes (fwd + bwd + AdamW)", optimize_s), ("  of which backward + optimizer (est.)", backward),
          ("device -> host (metrics)", d2h_s)]
  staged = h2d_s + rollout_s + advantages_s + optimize_s + d2h_s
  for name, seconds in rows:
    print(f"  {name:<40} {seconds * 1e3:10.2f} ms  {100 * seconds / staged:5.1f}%")
  print(f"  {'sum of stages':<40} {staged * 1e3:10.2f} ms  (fused update {update_s * 1e3:.2f} ms)")


if __name__ == "__main__":
  app.run(main)
