"""Decode throughput of `generate` (KV cache, jitted loop) against the HBM-bandwidth bound.

    PYTHONPATH=. python benchmarks/model_decode.py                           # ~1B, bf16, batch 1 and 32
    PYTHONPATH=. python benchmarks/model_decode.py --preset=tiny --batches=1,4 --prompt_len=16 --new_tokens=8,16

Per-token time is the slope between two runs with different numbers of new tokens (same
prompt), so the prefill and the dispatch overhead cancel out. `measure_decode` is one batch size's
measurement without the command line (`device_suite.py` runs it).

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
from jax.sharding import Mesh

from benchmarks.model_train_step import model_config
from benchmarks.timing import Timing, timed_runs
from steptool_jax.trainer.flops import device_peaks
from steptool_jax.models import Policy, SamplingConfig, generate_with_policy
from steptool_jax.models.config import ModelConfig
from steptool_jax.models.policy import init_base_params
from steptool_jax.models.pretrained import variable_shardings
from steptool_jax.parallel import make_mesh, sharding_context, spec_sharding


def decode_seconds(policy: Policy, ids, mask, new_tokens: int, *, repeats: int,
                   deadline: float | None = None) -> Timing:
  """Compiles, then times (`repeats` runs, fewer when `deadline` comes first) `generate` of
  exactly `new_tokens` tokens."""
  sampling = SamplingConfig(max_new_tokens=new_tokens)  # no EOS: every run decodes all tokens
  return timed_runs(lambda: generate_with_policy(policy, ids, mask, jax.random.key(0), sampling).tokens,
                    steps=repeats, deadline=deadline)


def bandwidth_bound(cfg: ModelConfig, batch: int, cache_slots: int, itemsize: int, hbm: float | None,
                    devices: int) -> float | None:
  """Tokens/s if a decode step only had to read every weight and the batch's whole KV cache
  once at `hbm` bytes/s per device (None when the bandwidth is unknown)."""
  if not hbm:
    return None
  param_bytes = cfg.num_params() * itemsize
  kv_bytes = 2 * cfg.num_layers * batch * cache_slots * cfg.num_kv_heads * cfg.head_dim * itemsize
  return batch / ((param_bytes + kv_bytes) / (hbm * devices))


def measure_decode(policy: Policy, mesh: Mesh, batch: int, *, prompt_len: int, new_tokens: tuple[int, int],
                   repeats: int, hbm: float | None, deadline: float | None = None) -> dict:
  """Per-token decode time at `batch` rows (the slope between the two lengths of `new_tokens`,
  best of the runs each) and its share of the HBM-bandwidth bound. With a `deadline`, the
  shorter length gets the first half of the time left."""
  cfg = policy.config
  rng = np.random.default_rng(0)
  ids = rng.integers(0, cfg.vocab_size, (batch, prompt_len), dtype=np.int32)
  n_short, n_long = new_tokens
  with sharding_context(mesh):
    ids_d, mask_d = jax.device_put((ids, np.ones_like(ids)), spec_sharding(("batch", "length"), mesh))
    halfway = None if deadline is None else time.perf_counter() + (deadline - time.perf_counter()) / 2
    short = decode_seconds(policy, ids_d, mask_d, n_short, repeats=repeats, deadline=halfway)
    long = decode_seconds(policy, ids_d, mask_d, n_long, repeats=repeats, deadline=deadline)
  per_step = (long.best_s - short.best_s) / (n_long - n_short)
  # Noise can make the slope meaningless at toy sizes (a CPU, a few tokens): reported as None.
  tokens_per_s = batch / per_step if per_step > 0 else None
  bound = bandwidth_bound(cfg, batch, prompt_len + n_long, jnp.dtype(cfg.param_dtype).itemsize, hbm,
                          mesh.devices.size)
  return {"batch": batch, "prompt_len": prompt_len, "new_tokens": list(new_tokens), "runs": len(long.times),
          "compile_s": short.first_s + long.first_s, "ms_per_step": per_step * 1e3, "tokens_per_s": tokens_per_s,
          "bound_tokens_per_s": bound,
          "fraction_of_bound": tokens_per_s / bound if bound and tokens_per_s else None}


def define_flags() -> None:
  flags.DEFINE_string("preset", "llama3_2_1b", "Model preset (tiny uses vocab 512).")
  flags.DEFINE_string("dtype", "bfloat16", "Parameter, compute and cache dtype.")
  flags.DEFINE_list("batches", ["1", "32"], "Batch sizes to measure.")
  flags.DEFINE_integer("prompt_len", 512, "Prompt tokens per row.")
  flags.DEFINE_list("new_tokens", ["64", "192"], "Two generation lengths; the slope is per token.")
  flags.DEFINE_integer("repeats", 3, "Timed runs per length (best is kept).")
  flags.DEFINE_string("mesh", "fsdp=-1", "Mesh axis sizes, e.g. tensor=-1.")
  flags.DEFINE_float("hbm_gbps", None, "Per-device memory bandwidth, if not in steptool_jax/trainer/flops.py.")


def random_policy(cfg: ModelConfig, mesh: Mesh) -> Policy:
  """Random weights of `cfg`, laid out on `mesh`."""
  shardings = variable_shardings(cfg, None, mesh)
  params = jax.jit(lambda r: init_base_params(cfg, r), out_shardings=shardings["params"])(jax.random.key(0))
  return Policy(config=cfg, variables={"params": params})


def main(argv):
  del argv
  f = flags.FLAGS
  cfg = model_config(f.preset, param_dtype=f.dtype, dtype=f.dtype)
  mesh = make_mesh({k: int(v) for k, v in (item.split("=") for item in f.mesh.split(","))})
  policy = random_policy(cfg, mesh)
  n_short, n_long = (int(n) for n in f.new_tokens)
  hbm = f.hbm_gbps * 1e9 if f.hbm_gbps else device_peaks()[1]
  param_bytes = cfg.num_params() * jnp.dtype(f.dtype).itemsize
  print(f"device: {jax.devices()[0].device_kind} x{mesh.devices.size}  model: {f.preset}"
        f" ({cfg.num_params() / 1e9:.2f}B,"
        f" {param_bytes / 1e9:.2f} GB)  dtype: {f.dtype}  prompt {f.prompt_len}  new {n_short}/{n_long}")
  for batch in (int(b) for b in f.batches):
    r = measure_decode(policy, mesh, batch, prompt_len=f.prompt_len, new_tokens=(n_short, n_long),
                       repeats=f.repeats, hbm=hbm)
    tokens_per_s = r["tokens_per_s"] or float("nan")
    line = f"batch {batch:3d}: {r['ms_per_step']:8.2f} ms/step  {tokens_per_s:10,.1f} tokens/s"
    if r["bound_tokens_per_s"]:
      line += (f"  bound {r['bound_tokens_per_s']:10,.1f} tokens/s"
               f"  ({100 * tokens_per_s / r['bound_tokens_per_s']:.1f}% of HBM bound)")
    print(line)
  if not hbm:
    print("HBM bound: unknown bandwidth for this device (pass --hbm_gbps)")


if __name__ == "__main__":
  define_flags()
  app.run(main)
