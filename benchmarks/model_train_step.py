"""Train-step (forward + backward + AdamW) throughput and MFU of the policy.

    PYTHONPATH=. python benchmarks/model_train_step.py                      # ~1B, 4k, bf16, remat
    PYTHONPATH=. python benchmarks/model_train_step.py --preset=tiny --seq_len=128 --batch=2 --steps=2
    PYTHONPATH=. python benchmarks/model_train_step.py --preset=smollm2_135m --dtype=float32 --seq_len=256 \
        --batch=4 --remat=none --steps=3 --matmul_size=2048       # a CPU: against XLA's own matmul rate
    ... --profile_dir=/tmp/step-profile     # and where the step's time goes, per compiled op (profile_ops.py)

The step is what PPO runs per minibatch: one trunk forward scoring every token (chunked
log-probs + values, `score_tokens`), a loss on them, the backward pass and an optimizer
update, jitted with donated state on a mesh over all local devices (`--mesh` sizes).

`measure_train_step` is the measurement without the command line (`device_suite.py` runs it).

FLOPs per step (`trainer.flops.sft_step_flops`; model FLOPs, i.e. no recomputation counted, as
in the PaLM MFU definition):
    tokens = batch * seq_len
    N_mm   = parameters that take part in matmuls: every layer weight + the LM head
             (the embedding lookup is a gather, not a matmul; tied heads count once)
    dense  = 2 * N_mm * tokens                      forward
    attn   = 2 * 2 * L * H * D * seq_len * tokens / 2  forward QK^T and PV, causal half
    full fine-tuning:  (dense + attn) * 3           backward = 2x forward
    --trainable=lora:  (dense + attn) * 2 + adapter terms
                       (frozen weights need activation gradients but no weight gradients)
MFU = FLOPs per step / (step time * devices * peak bf16 FLOP/s of one device).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from jax.sharding import Mesh

from benchmarks import profile_ops
from benchmarks.timing import matmul_rate, timed_runs
from steptool_jax.models import CausalLM, LoraConfig, ValueHead, preset, score_tokens
from steptool_jax.models.config import ModelConfig, tiny
from steptool_jax.models.policy import init_base_params, init_lora_params, init_value_head_params
from steptool_jax.parallel import make_mesh, sharding_context, spec_sharding
from steptool_jax.models.pretrained import variable_shardings
from steptool_jax.trainer import flops

def model_config(name: str, **overrides) -> ModelConfig:
  """A preset's architecture; `tiny` takes a vocabulary of 512."""
  return tiny(vocab_size=512, **overrides) if name == "tiny" else preset(name, **overrides)


def measure_train_step(*, preset_name: str = "llama3_2_1b", seq_len: int = 4096, batch: int = 4,
                       dtype: str = "bfloat16", remat: str = "full", attention: str = "auto",
                       trainable: str = "full", logits_chunk: int = 1024, steps: int = 10, mesh: Mesh | None = None,
                       peak_flops: float | None = None, deadline: float | None = None,
                       profile_dir: str = "") -> dict:
  """Compiles and times the step (`steps` runs, fewer when `deadline` comes first); returns
  its figures (`mfu` None when `peak_flops`, per device, is unknown). With `profile_dir`, two
  more steps run under the profiler and `profile` holds the per-operation table."""
  platform = jax.devices()[0].platform
  attention = attention if attention != "auto" else ("cudnn" if platform == "gpu" else "xla")
  cfg = model_config(preset_name, param_dtype=dtype, dtype=dtype, remat=remat, attention_impl=attention)
  lora = LoraConfig(rank=8, alpha=16.0) if trainable == "lora" else None
  mesh = make_mesh({"fsdp": -1}) if mesh is None else mesh
  shardings = variable_shardings(cfg, lora, mesh)

  init = jax.jit(lambda r: init_base_params(cfg, r), out_shardings=shardings["params"])
  variables = {"params": init(jax.random.key(0))}
  if lora is not None:
    variables["lora"] = jax.device_put(init_lora_params(cfg, lora, jax.random.key(1)), shardings["lora"])
  variables["value_head"] = jax.device_put(init_value_head_params(cfg), shardings["value_head"])
  trainable_keys = ("lora", "value_head") if lora is not None else ("params", "value_head")
  optimizer = optax.adamw(1e-5)
  model, head = CausalLM(cfg, lora, deterministic=True), ValueHead()

  def loss_fn(trainable, frozen, ids, mask):
    scores = score_tokens(model, {**frozen, **trainable}, ids, mask, value_head=head, chunk_size=logits_chunk)
    # A stand-in for the PPO loss with the same data flow: log-probs and values of every token.
    return -jnp.mean(scores.logp) + 0.1 * jnp.mean(jnp.square(scores.values))

  def train_step(trainable, opt_state, frozen, ids, mask):
    loss, grads = jax.value_and_grad(loss_fn)(trainable, frozen, ids, mask)
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, loss

  holder = {"trainable": {k: variables[k] for k in trainable_keys}}
  frozen = {k: v for k, v in variables.items() if k not in trainable_keys}
  del variables
  batch_sharding = spec_sharding(("batch", "length"), mesh)
  rng = np.random.default_rng(0)
  ids = jax.device_put(rng.integers(0, cfg.vocab_size, (batch, seq_len), dtype=np.int32), batch_sharding)
  mask = jax.device_put(np.ones((batch, seq_len), np.int32), batch_sharding)

  with sharding_context(mesh):
    holder["opt_state"] = jax.jit(optimizer.init)(holder["trainable"])
    step = jax.jit(train_step, donate_argnums=(0, 1))

    def one_step():
      holder["trainable"], holder["opt_state"], loss = step(holder["trainable"], holder["opt_state"], frozen, ids,
                                                            mask)
      return loss

    timing = timed_runs(one_step, steps=steps, deadline=deadline)
    profile = ""
    if profile_dir:
      hlo = step.lower(holder["trainable"], holder["opt_state"], frozen, ids, mask).compile().as_text()
      trace = profile_ops.trace_runs(one_step, runs=2, directory=profile_dir)
      with open(f"{profile_dir}/step.hlo.txt", "w") as f:  # what the op names of the table refer to
        f.write(hlo)
      profile = profile_ops.format_table(profile_ops.op_times(trace, hlo, runs=2))

  step_s = timing.median_s
  tokens = batch * seq_len
  step_flops = flops.sft_step_flops(cfg, lora, rows=batch, seq_len=seq_len)
  n_dev = mesh.devices.size
  return {"device": jax.devices()[0].device_kind, "devices": n_dev, "preset": preset_name,
          "params": cfg.num_params(), "dtype": dtype, "remat": remat, "attention": attention, "trainable": trainable,
          "batch": batch, "seq_len": seq_len, "compile_s": timing.first_s, "steps": len(timing.times),
          "step_s": step_s, "loss": float(timing.out), "tokens_per_s": tokens / step_s, "flops_per_step": step_flops,
          "tflops_per_device": step_flops / step_s / n_dev / 1e12,
          "mfu": flops.mfu(step_flops, step_s, n_dev, peak_flops), "profile": profile}


def define_flags() -> None:
  flags.DEFINE_string("preset", "llama3_2_1b", "Model preset (tiny uses vocab 512).")
  flags.DEFINE_integer("seq_len", 4096, "Tokens per row.")
  flags.DEFINE_integer("batch", 4, "Rows per step (global).")
  flags.DEFINE_string("dtype", "bfloat16", "Parameter and compute dtype.")
  flags.DEFINE_enum("remat", "full", ["none", "full", "dots"], "Per-layer rematerialisation.")
  flags.DEFINE_enum("attention", "auto", ["auto", "xla", "cudnn"], "auto: cudnn on NVIDIA GPUs.")
  flags.DEFINE_enum("trainable", "full", ["full", "lora"], "What the optimizer updates.")
  flags.DEFINE_integer("logits_chunk", 1024, "Time chunk of the log-prob computation.")
  flags.DEFINE_integer("steps", 10, "Timed steps (after one compile/warm-up step).")
  flags.DEFINE_string("mesh", "fsdp=-1", "Mesh axis sizes, e.g. data=2,fsdp=-1,tensor=1.")
  flags.DEFINE_float("peak_tflops", None, "Per-device dense bf16 peak, if not in steptool_jax/trainer/flops.py.")
  flags.DEFINE_integer("matmul_size", 0, "Also time a square matmul of this size in --dtype (0: no) and report the"
                                         " step's FLOP/s as a fraction of it: the yardstick on a CPU, which has no"
                                         " peak in the table.")
  flags.DEFINE_string("profile_dir", "", "Also trace two steps with the profiler into this directory and print where"
                                         " the step's time goes, per compiled operation (benchmarks/profile_ops.py).")


def main(argv):
  del argv
  f = flags.FLAGS
  mesh = make_mesh({k: int(v) for k, v in (item.split("=") for item in f.mesh.split(","))})
  peak = f.peak_tflops * 1e12 if f.peak_tflops else flops.device_peaks()[0]
  r = measure_train_step(preset_name=f.preset, seq_len=f.seq_len, batch=f.batch, dtype=f.dtype, remat=f.remat,
                         attention=f.attention, trainable=f.trainable, logits_chunk=f.logits_chunk, steps=f.steps,
                         mesh=mesh, peak_flops=peak, profile_dir=f.profile_dir)
  print(f"device: {r['device']} x{r['devices']}  model: {r['preset']} ({r['params'] / 1e9:.2f}B)"
        f"  dtype: {r['dtype']}  remat: {r['remat']}  attention: {r['attention']}  trainable: {r['trainable']}")
  print(f"batch {r['batch']} x {r['seq_len']} tokens; first step (compile) {r['compile_s']:.1f}s; loss {r['loss']:.4f}")
  print(f"step {r['step_s'] * 1e3:.1f} ms (median of {r['steps']}); {r['tokens_per_s']:,.0f} tokens/s;"
        f" {r['tflops_per_device']:.2f} TFLOP/s per device")
  if r["mfu"] is not None:
    print(f"MFU {100 * r['mfu']:.1f}% (peak {peak / 1e12:.0f} TFLOP/s per device)")
  else:
    print("MFU: unknown peak for this device (pass --peak_tflops)")
  if f.matmul_size:
    rate = matmul_rate(f.matmul_size, f.dtype) / mesh.devices.size
    print(f"{f.matmul_size}^3 {f.dtype} matmul: {rate / 1e9:,.1f} GFLOP/s per device; the step runs at"
          f" {100 * r['tflops_per_device'] * 1e12 / rate:.1f}% of it")
  if r["profile"]:
    print(r["profile"])


if __name__ == "__main__":
  define_flags()
  app.run(main)
