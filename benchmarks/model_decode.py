"""Decode throughput of `generate` (KV cache, jitted loop) against the HBM-bandwidth bound.

    PYTHONPATH=. python benchmarks/model_decode.py                           # ~1B, bf16, batch 1 and 32
    PYTHONPATH=. python benchmarks/model_decode.py --preset=tiny --batches=1,4 --prompt_len=16 --new_tokens=8,16

Per-token time is the slope between two runs with different numbers of new tokens (same
prompt), so the prefill and the dispatch overhead cancel out.

Bandwidth bound: a decode step must read every weight once and the whole KV cache of the
batch (the attention reads all `prompt_len + new_tokens` slots of the static cache):
    bytes/step = param_bytes + 2 * L * B * S * kv_heads * head_dim * bytes(dtype)
    bound      = B tokens / (bytes/step / HBM bandwidth)
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from steptool_jax.trainer.flops import device_peaks
from steptool_jax.models import Policy, SamplingConfig, generate_with_policy, preset
from steptool_jax.models.config import tiny
from steptool_jax.models.policy import init_base_params
from steptool_jax.models.pretrained import variable_shardings
from steptool_jax.parallel import make_mesh, sharding_context, spec_sharding

_PRESET = flags.DEFINE_string("preset", "llama3_2_1b", "Model preset (tiny uses vocab 512).")
_DTYPE = flags.DEFINE_string("dtype", "bfloat16", "Parameter, compute and cache dtype.")
_BATCHES = flags.DEFINE_list("batches", ["1", "32"], "Batch sizes to measure.")
_PROMPT = flags.DEFINE_integer("prompt_len", 512, "Prompt tokens per row.")
_NEW = flags.DEFINE_list("new_tokens", ["64", "192"], "Two generation lengths; the slope is per token.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per length (best is kept).")
_MESH = flags.DEFINE_string("mesh", "fsdp=-1", "Mesh axis sizes, e.g. tensor=-1.")
_HBM = flags.DEFINE_float("hbm_gbps", None, "Per-device memory bandwidth, if not in steptool_jax/trainer/flops.py.")


def run_seconds(policy: Policy, ids, mask, new_tokens: int) -> float:
  sampling = SamplingConfig(max_new_tokens=new_tokens)  # no EOS: every run decodes all tokens
  out = generate_with_policy(policy, ids, mask, jax.random.key(0), sampling)  # compile
  jax.block_until_ready(out.tokens)
  best = float("inf")
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    jax.block_until_ready(generate_with_policy(policy, ids, mask, jax.random.key(0), sampling).tokens)
    best = min(best, time.perf_counter() - start)
  return best


def main(argv):
  del argv
  make = (lambda **kw: tiny(vocab_size=512, **kw)) if _PRESET.value == "tiny" else (lambda **kw: preset(_PRESET.value, **kw))
  cfg = make(param_dtype=_DTYPE.value, dtype=_DTYPE.value)
  mesh = make_mesh({k: int(v) for k, v in (item.split("=") for item in _MESH.value.split(","))})
  shardings = variable_shardings(cfg, None, mesh)
  params = jax.jit(lambda r: init_base_params(cfg, r), out_shardings=shardings["params"])(jax.random.key(0))
  policy = Policy(config=cfg, variables={"params": params})
  n_short, n_long = (int(n) for n in _NEW.value)
  _, hbm = device_peaks()
  hbm = _HBM.value * 1e9 if _HBM.value else hbm
  n_dev = mesh.devices.size
  itemsize = jnp.dtype(_DTYPE.value).itemsize
  param_bytes = cfg.num_params() * itemsize
  print(f"device: {jax.devices()[0].device_kind} x{n_dev}  model: {_PRESET.value} ({cfg.num_params() / 1e9:.2f}B, "
        f"{param_bytes / 1e9:.2f} GB)  dtype: {_DTYPE.value}  prompt {_PROMPT.value}  new {n_short}/{n_long}")
  rng = np.random.default_rng(0)
  for batch in (int(b) for b in _BATCHES.value):
    ids = rng.integers(0, cfg.vocab_size, (batch, _PROMPT.value), dtype=np.int32)
    mask = np.ones_like(ids)
    with sharding_context(mesh):
      sharding = spec_sharding(("batch", "length"), mesh)
      ids_d, mask_d = jax.device_put((ids, mask), sharding)
      short = run_seconds(policy, ids_d, mask_d, n_short)
      long = run_seconds(policy, ids_d, mask_d, n_long)
    per_step = (long - short) / (n_long - n_short)
    tokens_per_s = batch / per_step
    cache_slots = _PROMPT.value + n_long
    kv_bytes = 2 * cfg.num_layers * batch * cache_slots * cfg.num_kv_heads * cfg.head_dim * itemsize
    line = f"batch {batch:3d}: {per_step * 1e3:8.2f} ms/step  {tokens_per_s:10,.1f} tokens/s"
    if hbm:
      bound = batch / ((param_bytes + kv_bytes) / (hbm * n_dev))
      line += f"  bound {bound:10,.1f} tokens/s  ({100 * tokens_per_s / bound:.1f}% of HBM bound)"
    print(line)
  if not hbm:
    print("HBM bound: unknown bandwidth for this device (pass --hbm_gbps)")


if __name__ == "__main__":
  app.run(main)
