"""GAE and reward placement: jitted kernels vs the original trainer's loops.

    python benchmarks/gae_bench.py [--batch 64] [--length 4096] [--steps 8]

One run, same inputs for everyone: B rows of T tokens, each row a prompt then
`steps` (observation, action) pairs and right padding. Timed:

* the original trainer's per-token GAE loop and its per-row ``nonzero()``
  placement loop (with the KL term), reimplemented faithfully in torch (its
  engine) and in numpy;
* ``compute_gae`` (step and token mode, every recurrence method) and
  ``token_rewards`` (paper and original_code weighting), jitted.

Results are checked for equality first. Reported times are the minimum over
repeats (the machine may be shared); the jitted kernels are timed round-robin so
that they all see the same background load. The memory-bandwidth lower bound of a
jitted kernel is (bytes it must read + write) / (bandwidth of a jitted in-place
add over 256 MiB, measured here); a second bound uses the bandwidth of an
elementwise add on arrays of the kernel's own size, which may sit in cache.

Device-agnostic: JAX uses its default backend (CPU, GPU or TPU) and torch uses
CUDA when it is available, so the same script measures a GPU.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from steptool_jax.rewards.placement import token_rewards  # noqa: E402
from steptool_jax.rl.gae import compute_gae  # noqa: E402

GAMMA, LAM, KL_COEF = 0.99, 0.95, 0.3


# ---------------------------------------------------------------- inputs
def make_inputs(batch: int, length: int, steps: int, seed: int = 0) -> dict[str, np.ndarray]:
  """Rows of prompt + `steps` x (observation, action) + padding, with random floats."""
  rng = np.random.default_rng(seed)
  step_ids = np.full((batch, length), -1, np.int32)
  for b in range(batch):
    used = int(length * rng.uniform(0.8, 1.0))          # some right padding
    cuts = np.sort(rng.choice(np.arange(1, used), size=2 * steps, replace=False))
    bounds = np.concatenate([cuts, [used]])
    for k in range(steps):                                 # segment 2k+1 is action k
      step_ids[b, bounds[2 * k]:bounds[2 * k + 1]] = k
  return {
      "step_ids": step_ids,
      "action_mask": (step_ids >= 0).astype(np.int32),
      "step_rewards": rng.uniform(0, 1, (batch, steps)).astype(np.float32),
      "num_steps": np.full(batch, steps, np.int32),
      "rewards": rng.normal(size=(batch, length)).astype(np.float32),
      "values": rng.normal(size=(batch, length)).astype(np.float32),
      "logp": rng.uniform(-3, 0, (batch, length)).astype(np.float32),
      "ref_logp": rng.uniform(-3, 0, (batch, length)).astype(np.float32),
  }


# ---------------------------------------------------------------- the original's loops, torch
def torch_gae_loop(values, rewards, mask, gamma=GAMMA, lam=LAM):
  """The original trainer's advantage loop: one iteration per token, time-major."""
  last = 0
  reversed_advantages = []
  length = rewards.shape[-1]
  values = values * mask
  rewards = rewards * mask
  for t in reversed(range(length)):
    next_values = values[:, t + 1] if t < length - 1 else 0.0
    delta = rewards[:, t] + gamma * next_values - values[:, t]
    last = delta + gamma * lam * last
    reversed_advantages.append(last)
  advantages = torch.stack(reversed_advantages[::-1]).transpose(0, 1)
  return advantages, advantages + values


def torch_placement_loop(scores, logp, ref_logp, masks, kl_coef=KL_COEF):
  """The original `compute_rewards`: KL term, then per row walk the mask runs backwards with nonzero()."""
  rewards = []
  for score, lp, ref, mask in zip(scores, logp, ref_logp, masks):
    reward = -kl_coef * (lp - ref)
    remaining = mask.clone()
    for k in reversed(range(len(score))):
      ones = remaining.nonzero()
      if len(ones) == 0:
        break
      end = ones[-1]
      reward[end] += score[k] * (len(score) - k - 1)
      remaining = remaining[:end + 1]
      zeros = (remaining == 0).nonzero()
      if len(zeros) == 0:
        break
      remaining = remaining[:zeros[-1] + 1]
    rewards.append(reward)
  return torch.stack(rewards)


# ---------------------------------------------------------------- the same loops, numpy
def numpy_gae_loop(values, rewards, mask, gamma=GAMMA, lam=LAM):
  values = values * mask
  rewards = rewards * mask
  length = rewards.shape[-1]
  advantages = np.zeros_like(rewards)
  last = np.zeros(rewards.shape[0], rewards.dtype)
  for t in reversed(range(length)):
    next_values = values[:, t + 1] if t < length - 1 else 0.0
    delta = rewards[:, t] + gamma * next_values - values[:, t]
    last = delta + gamma * lam * last
    advantages[:, t] = last
  return advantages, advantages + values


def numpy_placement_loop(scores, logp, ref_logp, masks, kl_coef=KL_COEF):
  out = -kl_coef * (logp - ref_logp)
  for row, (score, mask) in enumerate(zip(scores, masks)):
    remaining = mask
    for k in reversed(range(len(score))):
      ones = np.flatnonzero(remaining)
      if ones.size == 0:
        break
      end = ones[-1]
      out[row, end] += score[k] * (len(score) - k - 1)
      remaining = remaining[:end + 1]
      zeros = np.flatnonzero(remaining == 0)
      if zeros.size == 0:
        break
      remaining = remaining[:zeros[-1] + 1]
  return out


# ---------------------------------------------------------------- timing
def best_of(fn, repeats: int) -> float:
  """Minimum wall time in seconds over `repeats` calls (after one warm-up call)."""
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def best_of_interleaved(fns: dict, repeats: int) -> dict:
  """Minimum wall time of each function, timing them round-robin so that all of them
  see the same background load (the minimum is the least disturbed run)."""
  for fn in fns.values():
    fn()
  best = {name: float("inf") for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      best[name] = min(best[name], time.perf_counter() - start)
  return best


def jax_timer(fn, *args):
  return lambda: jax.block_until_ready(fn(*args))


def torch_timer(fn, *args, device):
  def run():
    out = fn(*args)
    if device.type == "cuda":
      torch.cuda.synchronize()
    return out
  return run


def dram_bandwidth(repeats: int) -> float:
  """Bytes/s of a jitted in-place ``x + 1`` over 256 MiB: the memory-bandwidth ceiling."""
  x = jnp.zeros((64 * 1024 * 1024,), jnp.float32)
  add_one = jax.jit(lambda a: a + 1, donate_argnums=0)   # in place: no page faults on fresh outputs
  x = jax.block_until_ready(add_one(x))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    x = jax.block_until_ready(add_one(x))
    best = min(best, time.perf_counter() - start)
  return 2 * x.nbytes / best


def same_size_bandwidth(shape: tuple[int, ...], repeats: int) -> float:
  """Bytes/s of a jitted ``x + y`` on arrays of the kernels' own size (cache-resident when they fit)."""
  x = jnp.ones(shape, jnp.float32)
  y = jnp.ones(shape, jnp.float32)
  seconds = best_of(jax_timer(jax.jit(jnp.add), x, y), repeats)
  return 3 * x.nbytes / seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--length", type=int, default=4096)
  parser.add_argument("--steps", type=int, default=8)
  parser.add_argument("--loop-repeats", type=int, default=5)
  parser.add_argument("--jit-repeats", type=int, default=100)
  args = parser.parse_args()

  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; jax {jax.__version__} on "
        f"{jax.devices()[0].device_kind} ({jax.default_backend()}); torch {torch.__version__} on {device}, "
        f"{torch.get_num_threads()} threads")
  print(f"# B={args.batch} T={args.length} steps/row={args.steps} gamma={GAMMA} lam={LAM}; "
        f"load average at start {os.getloadavg()[0]:.2f} (other work on the machine inflates every number)")
  data = make_inputs(args.batch, args.length, args.steps)
  host = {k: v for k, v in data.items()}
  dev = {k: jax.device_put(v) for k, v in data.items()}
  tdev = {k: torch.from_numpy(v).to(device) for k, v in data.items()}
  tmask = tdev["action_mask"].float()
  scores = [tdev["step_rewards"][b] for b in range(args.batch)]

  # ---- correctness first: the jitted kernels equal the original loops on these inputs
  loop_adv, loop_ret = torch_gae_loop(tdev["values"], tdev["rewards"], tmask)
  loop_rewards = torch_placement_loop(scores, tdev["logp"], tdev["ref_logp"], tdev["action_mask"])
  gae = jax.jit(compute_gae, static_argnames=("mode", "method"))
  placement = jax.jit(token_rewards, static_argnames=("weighting",))
  kl = dev["logp"] - dev["ref_logp"]
  for method in ("auto", "scan", "associative", "chunked"):
    adv, ret = gae(dev["rewards"], dev["values"], dev["action_mask"], gamma=GAMMA, lam=LAM, mode="token",
                   method=method)
    np.testing.assert_allclose(np.asarray(adv), loop_adv.cpu().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(ret), loop_ret.cpu().numpy(), rtol=1e-4, atol=1e-4)
  ours = placement(dev["step_rewards"], dev["step_ids"], dev["action_mask"], kl, kl_coef=KL_COEF,
                   weighting="original_code", num_steps=dev["num_steps"])
  # The original adds its KL term on every token (GAE masks it later); ours only on action tokens.
  np.testing.assert_allclose(np.asarray(ours) * host["action_mask"],
                             loop_rewards.cpu().numpy() * host["action_mask"], rtol=1e-5, atol=1e-6)
  np_adv, _ = numpy_gae_loop(host["values"], host["rewards"], host["action_mask"].astype(np.float32))
  np.testing.assert_allclose(np_adv, loop_adv.cpu().numpy(), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(
      numpy_placement_loop(host["step_rewards"], host["logp"], host["ref_logp"], host["action_mask"]),
      loop_rewards.cpu().numpy(), rtol=1e-5, atol=1e-6)
  print("# equality: jitted token-mode GAE (all methods) and original_code placement == the torch loops")

  # ---- the loops
  lr = args.loop_repeats
  t_torch_gae = best_of(torch_timer(torch_gae_loop, tdev["values"], tdev["rewards"], tmask, device=device), lr)
  t_torch_place = best_of(torch_timer(torch_placement_loop, scores, tdev["logp"], tdev["ref_logp"],
                                      tdev["action_mask"], device=device), lr)
  maskf = host["action_mask"].astype(np.float32)
  t_np_gae = best_of(lambda: numpy_gae_loop(host["values"], host["rewards"], maskf), lr)
  t_np_place = best_of(lambda: numpy_placement_loop(host["step_rewards"], host["logp"], host["ref_logp"],
                                                    host["action_mask"]), lr)

  # ---- the jitted kernels
  jr = args.jit_repeats
  bandwidth = dram_bandwidth(jr)
  near_bandwidth = same_size_bandwidth((args.batch, args.length), jr)
  cells = args.batch * args.length
  gae_bytes = cells * (4 + 4 + 4) + cells * (4 + 4)         # rewards, values, mask in; advantages, returns out
  place_bytes = cells * (4 + 4 + 4) + cells * 4              # step ids, action mask, kl in; rewards out
  print(f"# memory bandwidth (jitted in-place x+1 over 256 MiB): {bandwidth / 1e9:.1f} GB/s -> lower bounds: "
        f"GAE {gae_bytes / bandwidth * 1e3:.3f} ms ({gae_bytes / 2**20:.0f} MiB moved), "
        f"placement {place_bytes / bandwidth * 1e3:.3f} ms ({place_bytes / 2**20:.0f} MiB moved)")
  print(f"# same-size streaming (jitted x+y on [{args.batch}, {args.length}]): {near_bandwidth / 1e9:.1f} GB/s "
        f"-> GAE {gae_bytes / near_bandwidth * 1e3:.3f} ms, placement {place_bytes / near_bandwidth * 1e3:.3f} ms")
  print()
  print(f"{'kernel':44s} {'ms':>9s} {'x torch':>9s} {'x numpy':>9s} {'x bound':>8s} {'x same':>7s}")
  print(f"{'torch loop: GAE (original, per token)':44s} {t_torch_gae * 1e3:9.2f}")
  print(f"{'numpy loop: GAE (original, per token)':44s} {t_np_gae * 1e3:9.2f}")
  print(f"{'torch loop: placement + KL (nonzero per row)':44s} {t_torch_place * 1e3:9.2f}")
  print(f"{'numpy loop: placement + KL (nonzero per row)':44s} {t_np_place * 1e3:9.2f}")

  def report(name, seconds, torch_seconds, numpy_seconds, nbytes):
    print(f"{name:44s} {seconds * 1e3:9.3f} {torch_seconds / seconds:9.1f} {numpy_seconds / seconds:9.1f} "
          f"{seconds / (nbytes / bandwidth):8.1f} {seconds / (nbytes / near_bandwidth):7.1f}")

  kernels, kinds = {}, {}
  for mode in ("step", "token"):
    for method in ("auto", "scan", "associative", "chunked"):
      fn = functools.partial(gae, gamma=GAMMA, lam=LAM, mode=mode, method=method)
      kernels[f"jit GAE {mode}/{method}"] = jax_timer(fn, dev["rewards"], dev["values"], dev["action_mask"])
      kinds[f"jit GAE {mode}/{method}"] = (t_torch_gae, t_np_gae, gae_bytes)
  for weighting in ("original_code", "paper"):
    fn = functools.partial(placement, kl_coef=KL_COEF, weighting=weighting, num_steps=dev["num_steps"])
    kernels[f"jit placement + KL {weighting}"] = jax_timer(fn, dev["step_rewards"], dev["step_ids"],
                                                          dev["action_mask"], kl)
    kinds[f"jit placement + KL {weighting}"] = (t_torch_place, t_np_place, place_bytes)
  for name, seconds in best_of_interleaved(kernels, jr).items():
    report(name, seconds, *kinds[name])
  print(f"# load average at end {os.getloadavg()[0]:.2f}")
  print("# x torch / x numpy: speed-up over that loop. x bound: time / memory-bandwidth lower bound;"
        " x same: time / same-size streaming time (1 = as fast as an elementwise pass over the same bytes)")


if __name__ == "__main__":
  main()
