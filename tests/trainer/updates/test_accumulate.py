"""Gradient accumulation against the plain sum of per-micro-batch `jax.grad`s in a Python loop,
dropped micro-batches (even non-finite ones) adding exactly nothing, and the non-finite flag."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from steptool_jax.trainer.updates.accumulate import accumulate_gradients, all_finite, nonfinite_flag

ACCUM, ROWS, FEATURES = 3, 2, 4
RNG = np.random.default_rng(0)
PARAMS = {"w": jnp.asarray(RNG.standard_normal(FEATURES), jnp.float32), "b": jnp.asarray(0.5, jnp.float32)}
MICRO = {"x": jnp.asarray(RNG.standard_normal((ACCUM, ROWS, FEATURES)), jnp.float32),
         "y": jnp.asarray(RNG.standard_normal((ACCUM, ROWS)), jnp.float32)}
RNGS = jax.random.split(jax.random.key(3), ACCUM)
FAST_COMPILE = {"xla_backend_optimization_level": 0}  # compile time is most of this file's cost


def jit(fn):
  return jax.jit(fn, compiler_options=FAST_COMPILE)


def loss(params, micro, rng):
  """A nonlinear loss that also uses the micro-batch's key (a dropout-like scale)."""
  scale = 1.0 + jax.random.uniform(rng)
  prediction = jnp.tanh(micro["x"] @ params["w"] + params["b"]) * scale
  value = jnp.sum((prediction - micro["y"]) ** 2)
  return value, {"loss": value, "scale": scale, "flag": jnp.sum(micro["y"])}


GRAD_FN = jax.value_and_grad(loss, has_aux=True)
ONE_GRAD = jit(jax.grad(lambda params, micro, rng: loss(params, micro, rng)[0]))
ONE_SCALE = jit(lambda params, micro, rng: loss(params, micro, rng)[1]["scale"])


def loop_reference(keep_index=lambda i: True):
  """The plain sum of `jax.grad` over the kept micro-batches, one at a time."""
  total = jax.tree.map(lambda x: np.zeros(x.shape, np.float32), PARAMS)
  scales = []
  for i in range(ACCUM):
    micro = {k: v[i] for k, v in MICRO.items()}
    grads = ONE_GRAD(PARAMS, micro, RNGS[i])
    scales.append(float(ONE_SCALE(PARAMS, micro, RNGS[i])))
    if keep_index(i):
      total = jax.tree.map(lambda a, g: a + np.asarray(g), total, grads)
  return total, scales


def test_the_sum_equals_the_loop_of_per_micro_batch_grads():
  grads, kept, metrics = jit(lambda p, m, r: accumulate_gradients(GRAD_FN, p, m, r))(PARAMS, MICRO, RNGS)
  expected, scales = loop_reference()
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6),
               grads, expected)
  assert float(kept) == ACCUM
  # Per-micro-batch metrics come back stacked, each computed with its own key.
  assert metrics["loss"].shape == (ACCUM,)
  np.testing.assert_allclose(np.asarray(metrics["scale"]), scales, rtol=1e-6)


def test_a_dropped_micro_batch_adds_exactly_nothing_even_when_non_finite():
  micro = {"x": MICRO["x"].at[1, 0, 0].set(jnp.nan), "y": MICRO["y"].at[1].set(-100.0)}  # micro-batch 1: NaN grads
  keep = lambda metrics: metrics["flag"] > -50.0
  grads, kept, metrics = jit(lambda p, m, r: accumulate_gradients(GRAD_FN, p, m, r, keep=keep))(
      PARAMS, micro, RNGS)
  assert float(kept) == 2.0
  assert bool(all_finite(grads))
  assert np.isnan(float(metrics["loss"][1]))  # its metrics are still reported
  expected, _ = loop_reference(keep_index=lambda i: i != 1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6),
               grads, expected)


def test_gradients_are_summed_in_float32_whatever_the_parameter_dtype():
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), PARAMS)
  micro = jax.tree.map(lambda x: x.astype(jnp.bfloat16), MICRO)
  grads, _, _ = jit(lambda p, m, r: accumulate_gradients(GRAD_FN, p, m, r))(params, micro, RNGS)
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))


def test_all_finite():
  assert bool(all_finite({"a": jnp.ones(3), "b": jnp.zeros((), jnp.bfloat16)}))
  assert not bool(all_finite({"a": jnp.ones(3), "b": jnp.array([1.0, jnp.inf])}))
  assert not bool(all_finite([jnp.array(jnp.nan, jnp.bfloat16)]))
  assert bool(all_finite({"steps": jnp.array([1, 2], jnp.int32)}))  # integers cannot be non-finite
  assert bool(all_finite({}))


def test_nonfinite_flag():
  params = {"w": jnp.ones(2)}
  assert float(nonfinite_flag(params, jnp.array(1.0), jnp.array(2.0))) == 0.0
  assert float(nonfinite_flag(params, jnp.array(jnp.nan), jnp.array(2.0))) == 1.0
  assert float(nonfinite_flag(params, jnp.array(1.0), jnp.array(jnp.inf))) == 1.0
  assert float(nonfinite_flag({"w": jnp.array([1.0, jnp.nan])}, jnp.array(1.0), jnp.array(2.0))) == 1.0
