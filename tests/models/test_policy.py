"""score_tokens: alignment of log-probs, entropies and values with input_ids; remat; bf16."""

from __future__ import annotations

import jax
import numpy as np

from steptool_jax.models import CausalLM, Policy, init_policy
from tests.models.tiny_models import IDS, MASK, TINY, fresh_lora_policy, tiny_policy, trainable_grads


def test_logp_and_entropy_are_aligned_with_input_ids():
  policy = tiny_policy()
  logits = np.asarray(policy.logits(IDS, MASK), np.float64)
  scores = policy.score(IDS, MASK, with_entropy=True)
  expected_logp = np.zeros(IDS.shape)
  expected_entropy = np.zeros(IDS.shape)
  for b in range(IDS.shape[0]):
    for t in range(1, IDS.shape[1]):
      if MASK[b, t] and MASK[b, t - 1]:
        row = logits[b, t - 1] - np.log(np.sum(np.exp(logits[b, t - 1])))
        expected_logp[b, t] = row[IDS[b, t]]
        expected_entropy[b, t] = -np.sum(np.exp(row) * row)
  np.testing.assert_allclose(scores.logp, expected_logp, atol=1e-5)
  np.testing.assert_allclose(scores.entropy, expected_entropy, atol=1e-5)
  assert np.all(np.asarray(scores.logp)[:, 0] == 0)


def test_values_come_from_the_previous_hidden_state():
  policy = tiny_policy()
  hidden, _ = jax.jit(lambda v: policy.model.apply(v, IDS, MASK, method=CausalLM.hidden_states))(
      {"params": policy.variables["params"]})
  hidden = np.asarray(hidden, np.float64)
  head = policy.variables["value_head"]
  kernel, bias = np.asarray(head["kernel"], np.float64), float(head["bias"])
  expected = np.zeros(IDS.shape)
  for b in range(IDS.shape[0]):
    for t in range(1, IDS.shape[1]):
      if MASK[b, t] and MASK[b, t - 1]:
        expected[b, t] = hidden[b, t - 1] @ kernel + bias
  values = np.asarray(policy.score(IDS, MASK).values)
  np.testing.assert_allclose(values, expected, atol=1e-4)
  assert np.abs(expected).max() > 0.5


def test_remat_gives_the_same_gradients():
  """Gradients of the trainable parts (adapters, value head) with per-layer remat and without."""
  plain = trainable_grads(fresh_lora_policy(), remat="none")
  remat = trainable_grads(fresh_lora_policy(), remat="full")
  # Same math, different fusion: float32 rounding only (relative to each gradient's scale).
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5 * float(np.abs(b).max())),
      plain, remat)


def test_bf16_compute_stays_close_to_float32():
  policy = tiny_policy()
  bf16 = Policy(config=TINY.replace(dtype="bfloat16"), variables=policy.variables)
  ref = np.asarray(policy.logits(IDS, MASK))
  ours = np.asarray(bf16.logits(IDS, MASK))
  assert ours.dtype == np.float32  # logits are produced in float32 from bf16 activations
  real = MASK.astype(bool)
  assert np.abs(ours - ref)[real].max() < 0.1 * np.abs(ref[real]).max()


def test_init_policy_starts_from_the_documented_initialisers():
  policy = init_policy(TINY, jax.random.key(0))
  params = policy.variables["params"]
  np.testing.assert_array_equal(params["final_norm"]["scale"], np.ones(TINY.hidden_size))
  q = np.asarray(params["layers"]["self_attn"]["q_proj"]["kernel"])
  assert abs(q.std() - TINY.initializer_range) < 0.01 and abs(q.mean()) < 0.01
  assert not np.allclose(q[0], q[1])  # layers get their own draws
  np.testing.assert_array_equal(policy.variables["value_head"]["kernel"], np.zeros(TINY.hidden_size))
