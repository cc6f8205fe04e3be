"""Train-step (forward + backward + AdamW) throughput and MFU of the policy.

    PYTHONPATH=. python benchmarks/model_train_step.py                      # ~1B, 4k, bf16, remat
    PYTHONPATH=. python benchmarks/model_train_step.py --preset=tiny --seq_len=128 --batch=2 --steps=2

The step is what PPO runs per minibatch: one trunk forward scoring every token (chunked
log-probs + values, `score_tokens`), a loss on them, the backward pass and an optimizer
update, jitted with donated state on a mesh over all local devices (`--mesh` sizes).

FLOPs per step (model FLOPs, i.e. no recomputation counted, as in the PaLM MFU definition):
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

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from steptool_jax.trainer.flops import device_peaks
from steptool_jax.models import CausalLM, LoraConfig, ValueHead, abstract_variables, preset, score_tokens
from steptool_jax.models.config import tiny
from steptool_jax.models.policy import init_base_params, init_lora_params, init_value_head_params
from steptool_jax.parallel import make_mesh, sharding_context, spec_sharding
from steptool_jax.models.pretrained import variable_shardings

_PRESET = flags.DEFINE_string("preset", "llama3_2_1b", "Model preset (tiny uses vocab 512).")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 4096, "Tokens per row.")
_BATCH = flags.DEFINE_integer("batch", 4, "Rows per step (global).")
_DTYPE = flags.DEFINE_string("dtype", "bfloat16", "Parameter and compute dtype.")
_REMAT = flags.DEFINE_enum("remat", "full", ["none", "full", "dots"], "Per-layer rematerialisation.")
_ATTENTION = flags.DEFINE_enum("attention", "auto", ["auto", "xla", "cudnn"], "auto: cudnn on NVIDIA GPUs.")
_TRAINABLE = flags.DEFINE_enum("trainable", "full", ["full", "lora"], "What the optimizer updates.")
_CHUNK = flags.DEFINE_integer("logits_chunk", 1024, "Time chunk of the log-prob computation.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps (after one compile/warm-up step).")
_MESH = flags.DEFINE_string("mesh", "fsdp=-1", "Mesh axis sizes, e.g. data=2,fsdp=-1,tensor=1.")
_PEAK = flags.DEFINE_float("peak_tflops", None, "Per-device dense bf16 peak, if not in steptool_jax/trainer/flops.py.")


def step_flops(cfg, tokens: int, seq_len: int, lora: LoraConfig | None) -> float:
  e, l = cfg.hidden_size, cfg.num_layers
  n_matmul = cfg.num_params() - cfg.vocab_size * e - (2 * l + 1) * e  # minus embedding gather and norms
  if cfg.tie_word_embeddings:
    n_matmul += cfg.vocab_size * e  # the tied table is also the LM head matmul
  dense = 2 * n_matmul * tokens
  attn = 2 * 2 * l * cfg.num_heads * cfg.head_dim * seq_len * tokens / 2
  if lora is None:
    return 3 * (dense + attn)
  adapters = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(abstract_variables(cfg, lora)["lora"]))
  return 2 * (dense + attn) + 3 * 2 * adapters * tokens


def main(argv):
  del argv
  platform = jax.devices()[0].platform
  attention = _ATTENTION.value if _ATTENTION.value != "auto" else ("cudnn" if platform == "gpu" else "xla")
  make = (lambda **kw: tiny(vocab_size=512, **kw)) if _PRESET.value == "tiny" else (lambda **kw: preset(_PRESET.value, **kw))
  cfg = make(param_dtype=_DTYPE.value, dtype=_DTYPE.value, remat=_REMAT.value, attention_impl=attention)
  lora = LoraConfig(rank=8, alpha=16.0) if _TRAINABLE.value == "lora" else None
  mesh = make_mesh({k: int(v) for k, v in (item.split("=") for item in _MESH.value.split(","))})
  shardings = variable_shardings(cfg, lora, mesh)

  variables = {"params": jax.jit(lambda r: init_base_params(cfg, r), out_shardings=shardings["params"])(jax.random.key(0))}
  if lora is not None:
    variables["lora"] = jax.device_put(init_lora_params(cfg, lora, jax.random.key(1)), shardings["lora"])
  variables["value_head"] = jax.device_put(init_value_head_params(cfg), shardings["value_head"])
  trainable_keys = ("lora", "value_head") if lora is not None else ("params", "value_head")
  optimizer = optax.adamw(1e-5)
  model, head = CausalLM(cfg, lora, deterministic=True), ValueHead()

  def loss_fn(trainable, frozen, ids, mask):
    scores = score_tokens(model, {**frozen, **trainable}, ids, mask, value_head=head, chunk_size=_CHUNK.value)
    # A stand-in for the PPO loss with the same data flow: log-probs and values of every token.
    return -jnp.mean(scores.logp) + 0.1 * jnp.mean(jnp.square(scores.values))

  def train_step(trainable, opt_state, frozen, ids, mask):
    loss, grads = jax.value_and_grad(loss_fn)(trainable, frozen, ids, mask)
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, loss

  trainable = {k: variables[k] for k in trainable_keys}
  frozen = {k: v for k, v in variables.items() if k not in trainable_keys}
  batch_sharding = spec_sharding(("batch", "length"), mesh)
  rng = np.random.default_rng(0)
  ids = jax.device_put(rng.integers(0, cfg.vocab_size, (_BATCH.value, _SEQ_LEN.value), dtype=np.int32), batch_sharding)
  mask = jax.device_put(np.ones((_BATCH.value, _SEQ_LEN.value), np.int32), batch_sharding)

  with sharding_context(mesh):
    opt_state = jax.jit(optimizer.init)(trainable)
    step = jax.jit(train_step, donate_argnums=(0, 1))
    start = time.perf_counter()
    trainable, opt_state, loss = step(trainable, opt_state, frozen, ids, mask)
    jax.block_until_ready(loss)
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(_STEPS.value):
      start = time.perf_counter()
      trainable, opt_state, loss = step(trainable, opt_state, frozen, ids, mask)
      jax.block_until_ready(loss)
      times.append(time.perf_counter() - start)

  step_s = float(np.median(times))
  tokens = _BATCH.value * _SEQ_LEN.value
  flops = step_flops(cfg, tokens, _SEQ_LEN.value, lora)
  peak = _PEAK.value * 1e12 if _PEAK.value else device_peaks()[0]
  n_dev = mesh.devices.size
  print(f"device: {jax.devices()[0].device_kind} x{n_dev}  model: {_PRESET.value} ({cfg.num_params() / 1e9:.2f}B)"
        f"  dtype: {_DTYPE.value}  remat: {_REMAT.value}  attention: {attention}  trainable: {_TRAINABLE.value}")
  print(f"batch {_BATCH.value} x {_SEQ_LEN.value} tokens; first step (compile) {compile_s:.1f}s; loss {float(loss):.4f}")
  print(f"step {step_s * 1e3:.1f} ms (median of {_STEPS.value}); {tokens / step_s:,.0f} tokens/s;"
        f" {flops / step_s / n_dev / 1e12:.2f} TFLOP/s per device")
  if peak:
    print(f"MFU {100 * flops / step_s / (n_dev * peak):.1f}% (peak {peak / 1e12:.0f} TFLOP/s per device)")
  else:
    print("MFU: unknown peak for this device (pass --peak_tflops)")


if __name__ == "__main__":
  app.run(main)
