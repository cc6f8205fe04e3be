"""One SFT update against a recomputation: the token-mean NLL of the loss tokens over the whole
batch from full logits (aligned by hand), its `jax.grad`, and one SGD step written out.

The batch has rows with different numbers of loss tokens and padding rows, so a mean of
per-micro-batch means, or a mean over rows, or padding that counted, would each show.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from steptool_jax.config import schema
from steptool_jax.config.run import RunConfig
from steptool_jax.models import CausalLM
from steptool_jax.rl.kl_controller import fixed_kl_controller
from steptool_jax.trainer.state import create_train_state
from steptool_jax.trainer.updates.sft import make_sft_update
from tests.models.tiny_models import TINY, tiny_policy
from tests.trainer.fixtures import compile_cache  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("compile_cache")

LR = 0.1
KEYS = ("params",)
# 4 rows in 2 micro-batches of 2 (strided: rows 0, 2 and rows 1, 3); logits in chunks of 8 of 16.
CONFIG = schema.replace(RunConfig(), algorithm="sft", batch__size=4, batch__minibatch_size=2,
                        batch__grad_accum_steps=2, model__logits_chunk=8)
WIDTH = 16
# XLA's backend optimisations cost most of the compile time of these small programs (2.5x on
# 2 CPU cores) and change nothing this test looks at.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def make_batch(lengths, loss_spans):
  """Right-padded rows of `lengths` tokens; loss tokens at the `(start, stop)` spans of each row."""
  rng = np.random.default_rng(sum(lengths))
  rows = len(lengths)
  attention = (np.arange(WIDTH)[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)
  ids = np.where(attention > 0, rng.integers(3, TINY.vocab_size, (rows, WIDTH)), 0).astype(np.int32)
  loss = np.zeros((rows, WIDTH), np.int32)
  for row, spans in enumerate(loss_spans):
    for start, stop in spans:
      loss[row, start:stop] = 1
  return {"input_ids": ids, "attention_mask": attention, "loss_mask": loss * attention}


@functools.partial(jax.jit, compiler_options=FAST_COMPILE)
def reference_loss_and_grads(params, batch):
  """Mean over every loss token of the batch of -log p(token t | tokens < t), from full logits."""
  def loss_fn(params):
    logits = CausalLM(TINY).apply({"params": params}, batch["input_ids"], batch["attention_mask"])
    log_probs = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    taken = jnp.take_along_axis(log_probs, batch["input_ids"][:, 1:, None], axis=-1)[..., 0]
    on = batch["loss_mask"][:, 1:] > 0
    return -jnp.sum(jnp.where(on, taken, 0)) / jnp.maximum(jnp.sum(on), 1)
  return jax.value_and_grad(loss_fn)(params)


@pytest.fixture(scope="module")
def update():
  tx = optax.sgd(LR)
  step = jax.jit(make_sft_update(TINY, None, CONFIG, tx, KEYS), compiler_options=FAST_COMPILE)

  def run(batch):
    state = create_train_state(tiny_policy().variables, jax.random.key(0), optimizer=tx, trainable_keys=KEYS,
                               kl=fixed_kl_controller(0.0), master_dtype=jnp.float32, keep_reference=False)
    return step(state, batch, jax.random.key(1))

  return run


def check_against_reference(update, batch):
  params = tiny_policy().variables["params"]
  loss, grads = reference_loss_and_grads(params, batch)
  state, metrics = update(batch)
  assert int(state.step) == 1
  np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(grads), rtol=1e-4)
  assert float(metrics["loss_tokens"]) == batch["loss_mask"].sum()
  assert float(metrics["tokens"]) == batch["attention_mask"].sum()
  assert float(metrics["rows"]) == batch["attention_mask"].any(axis=1).sum()
  assert float(metrics["nonfinite"]) == 0.0
  expected = jax.tree.map(lambda p, g: p - LR * g, params, grads)  # one SGD step on the reference loss
  jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6),
               state.policy["params"], expected)
  # The value head is not trained by SFT: it is carried over as it was.
  jax.tree.map(np.testing.assert_array_equal, state.policy["value_head"], tiny_policy().variables["value_head"])
  return state, metrics


def test_updates_against_the_recomputation(update):
  """One test for the three batches, so that one process compiles the update (xdist)."""
  # Micro-batch 0 (rows 0, 2) has 3 + 7 loss tokens, micro-batch 1 (rows 1, 3) 11 + 0: unequal,
  # so the token mean differs from a mean of micro-batch means. Row 3 is padding.
  batch = make_batch([13, 16, 9, 0], [[(4, 7)], [(2, 6), (9, 16)], [(2, 9)], []])
  state, _ = check_against_reference(update, batch)
  moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(state.policy["params"]),
                                                             jax.tree.leaves(tiny_policy().variables["params"])))
  assert moved > 1e-4

  # Micro-batch 1 is padding only: it weighs nothing.
  check_against_reference(update, make_batch([12, 0, 15, 0], [[(3, 12)], [], [(1, 4), (10, 15)], []]))

  # No loss token at all: nothing moves, and nothing is NaN.
  state, metrics = update(make_batch([10, 0, 0, 0], [[], [], [], []]))
  assert float(metrics["loss"]) == 0.0 and float(metrics["grad_norm"]) == 0.0
  assert float(metrics["nonfinite"]) == 0.0
  jax.tree.map(np.testing.assert_array_equal, state.policy["params"], tiny_policy().variables["params"])
