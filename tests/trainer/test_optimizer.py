"""The optimizer: the learning-rate schedules at given steps (worked by hand), AdamW with and
without clipping against Adam written out in numpy, and which collections are trained."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from steptool_jax.config.run import OptimSection
from steptool_jax.trainer.optimizer import learning_rate_schedule, make_optimizer, trainable_collections

LR = 1e-3


@pytest.mark.parametrize("lora, value_head, expected", [
    (True, True, ("lora", "value_head")),
    (False, True, ("params", "value_head")),
    (True, False, ("lora",)),
    (False, False, ("params",)),
])
def test_trainable_collections(lora, value_head, expected):
  assert trainable_collections(lora=lora, value_head=value_head) == expected


@pytest.mark.parametrize("schedule, warmup, num_steps, expected", [
    # step -> learning rate
    ("constant", 0, 10, {0: LR, 5: LR, 50: LR}),
    ("constant", 4, 10, {0: 0.0, 1: LR / 4, 2: LR / 2, 4: LR, 9: LR, 50: LR}),
    ("linear", 0, 10, {0: LR, 5: LR / 2, 10: 0.0, 20: 0.0}),
    # warmup 4 then 10 steps of decay: 4 -> peak, 9 -> half, 14 -> 0
    ("linear", 4, 14, {2: LR / 2, 4: LR, 9: LR / 2, 14: 0.0, 30: 0.0}),
    ("cosine", 0, 8, {0: LR, 2: LR * (1 + math.cos(math.pi / 4)) / 2, 4: LR / 2, 8: 0.0}),
    ("cosine", 2, 10, {1: LR / 2, 2: LR, 4: LR * (1 + math.cos(math.pi / 4)) / 2, 6: LR / 2, 10: 0.0, 12: 0.0}),
])
def test_learning_rate_schedule(schedule, warmup, num_steps, expected):
  fn = learning_rate_schedule(OptimSection(learning_rate=LR, schedule=schedule, warmup_steps=warmup), num_steps)
  for step, lr in expected.items():
    assert float(fn(step)) == pytest.approx(lr, rel=1e-5, abs=1e-12), step


def test_a_schedule_section_that_skipped_its_checks_is_refused():
  bad = OptimSection()
  object.__setattr__(bad, "schedule", "step")
  with pytest.raises(ValueError, match="optim.schedule: expected constant, linear or cosine, found 'step'"):
    learning_rate_schedule(bad, 10)


def adamw_reference(params, grads_per_step, *, lrs, b1, b2, eps, weight_decay, max_grad_norm):
  """AdamW written out: global-norm clipping, bias-corrected moments, decoupled weight decay."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v = {k: np.zeros_like(x) for k, x in p.items()}
  for t, grads in enumerate(grads_per_step, start=1):
    g = {k: np.asarray(x, np.float64) for k, x in grads.items()}
    if max_grad_norm > 0:
      norm = math.sqrt(sum(float(np.sum(x ** 2)) for x in g.values()))
      scale = min(1.0, max_grad_norm / norm)
      g = {k: x * scale for k, x in g.items()}
    for k in p:
      m[k] = b1 * m[k] + (1 - b1) * g[k]
      v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
      m_hat, v_hat = m[k] / (1 - b1 ** t), v[k] / (1 - b2 ** t)
      p[k] = p[k] - lrs[t - 1] * (m_hat / (np.sqrt(v_hat) + eps) + weight_decay * p[k])
  return p


@pytest.mark.parametrize("max_grad_norm", [1.0, 0.0])
def test_make_optimizer_is_clipped_adamw_on_the_schedule(max_grad_norm):
  optim = OptimSection(learning_rate=0.1, schedule="linear", b1=0.8, b2=0.9, eps=1e-6, weight_decay=0.05,
                       max_grad_norm=max_grad_norm)
  params = {"w": np.array([1.0, -2.0, 0.5], np.float32), "b": np.array(0.3, np.float32)}
  # A large gradient (norm 13: clipped to 1) then a small one (norm 0.5: untouched): Adam is
  # invariant to a constant scale, so only clipping that differs per step changes the result.
  grads = [{"w": np.array([3.0, 4.0, 12.0], np.float32), "b": np.array(0.0, np.float32)},
           {"w": np.array([0.3, 0.0, -0.4], np.float32), "b": np.array(0.0, np.float32)},
           {"w": np.array([-1.0, 2.0, 0.0], np.float32), "b": np.array(2.0, np.float32)}]
  tx = make_optimizer(optim, num_steps=4)

  @jax.jit
  def step(g, state, p):
    updates, state = tx.update(g, state, p)
    return jax.tree.map(jnp.add, p, updates), state

  state, current = tx.init(params), params
  for g in grads:
    current, state = step(g, state, current)
  expected = adamw_reference(params, grads, lrs=[0.1, 0.075, 0.05], b1=0.8, b2=0.9, eps=1e-6, weight_decay=0.05,
                             max_grad_norm=max_grad_norm)
  for k in params:
    np.testing.assert_allclose(np.asarray(current[k]), expected[k], rtol=1e-5, atol=1e-6)
  other = adamw_reference(params, grads, lrs=[0.1, 0.075, 0.05], b1=0.8, b2=0.9, eps=1e-6, weight_decay=0.05,
                          max_grad_norm=1.0 - max_grad_norm)
  assert not np.allclose(expected["w"], other["w"], rtol=1e-3)  # clipping is visible in this example
