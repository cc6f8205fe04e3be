"""Generation: stopping on EOS and stop sequences, top-p, sampling (greedy parity with HF is in
test_hf_parity.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from steptool_jax.models import SamplingConfig, generate_with_policy, left_pad
from steptool_jax.models.generate import top_p_filter
from tests.models.tiny_models import NEW_TOKENS as NEW, PROMPTS, lora_policy, tiny_policy


@pytest.fixture(scope="module")
def greedy():
  """Greedy continuations with no stop condition: the reference for the stopping tests."""
  ids, mask = left_pad(PROMPTS, pad_id=0)
  out = generate_with_policy(tiny_policy(), ids, mask, jax.random.key(0), SamplingConfig(max_new_tokens=NEW))
  assert np.all(np.asarray(out.lengths) == NEW) and not np.any(np.asarray(out.stopped))
  return np.asarray(out.tokens)


def run(sampling: SamplingConfig, key: int = 0):
  ids, mask = left_pad(PROMPTS, pad_id=0)
  return generate_with_policy(tiny_policy(), ids, mask, jax.random.key(key), sampling)


def expected_after_stop(row: np.ndarray, stop_at: int | None) -> tuple[np.ndarray, int]:
  if stop_at is None:
    return row, NEW
  out = row.copy()
  out[stop_at + 1:] = 0
  return out, stop_at + 1


def test_stops_at_eos(greedy):
  eos = int(greedy[0, 3])
  out = run(SamplingConfig(max_new_tokens=NEW, eos_ids=(eos,), pad_id=0))
  for b in range(len(PROMPTS)):
    hits = [i for i in range(NEW) if greedy[b, i] == eos]
    tokens, length = expected_after_stop(greedy[b], hits[0] if hits else None)
    np.testing.assert_array_equal(np.asarray(out.tokens)[b], tokens)
    assert int(out.lengths[b]) == length and bool(out.stopped[b]) == bool(hits)
    assert np.all(np.asarray(out.logprobs)[b, length:] == 0)


def test_stops_at_a_stop_sequence(greedy):
  seq = (int(greedy[1, 4]), int(greedy[1, 5]))
  out = run(SamplingConfig(max_new_tokens=NEW, stop_sequences=(seq, (127, 127, 127)), pad_id=0))
  for b in range(len(PROMPTS)):
    hits = [i for i in range(1, NEW) if (greedy[b, i - 1], greedy[b, i]) == seq]
    tokens, length = expected_after_stop(greedy[b], hits[0] if hits else None)
    np.testing.assert_array_equal(np.asarray(out.tokens)[b], tokens)
    assert int(out.lengths[b]) == length


def test_top_p_keeps_the_smallest_set_reaching_p():
  logits = jnp.log(jnp.array([[0.1, 0.5, 0.05, 0.3, 0.05]]))
  kept = np.isfinite(np.asarray(top_p_filter(logits, 0.7)))
  np.testing.assert_array_equal(kept, [[False, True, False, True, False]])  # 0.5 + 0.3 >= 0.7
  kept = np.isfinite(np.asarray(top_p_filter(logits, 0.5)))
  np.testing.assert_array_equal(kept, [[False, True, False, False, False]])
  assert np.all(np.isfinite(np.asarray(top_p_filter(logits, 1.0))))


def test_sampling_with_tiny_top_p_is_greedy(greedy):
  out = run(SamplingConfig(max_new_tokens=NEW, temperature=1.0, top_p=1e-6), key=3)
  np.testing.assert_array_equal(np.asarray(out.tokens), greedy)


def test_sampling_depends_on_the_key_only():
  sampling = SamplingConfig(max_new_tokens=NEW, temperature=1.5)
  a, b, c = run(sampling, key=1), run(sampling, key=1), run(sampling, key=2)
  np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
  assert np.any(np.asarray(a.tokens) != np.asarray(c.tokens))


@pytest.mark.parametrize("make_policy", [tiny_policy, lora_policy], ids=["base", "lora"])
def test_returned_logprobs_are_the_model_logprobs(make_policy):
  """They equal the log-probs of the same tokens scored by a full forward (temperature 1, no top-p);
  with adapters, both use them."""
  policy = make_policy()
  ids, mask = left_pad(PROMPTS, pad_id=0)
  out = generate_with_policy(policy, ids, mask, jax.random.key(5),
                             SamplingConfig(max_new_tokens=NEW, temperature=1.5, top_p=0.9))
  full = jnp.concatenate([ids, out.tokens], axis=1)
  full_mask = jnp.concatenate([mask, jnp.ones_like(out.tokens)], axis=1)
  scored = np.asarray(policy.token_logprobs(full, full_mask))[:, ids.shape[1]:]
  np.testing.assert_allclose(np.asarray(out.logprobs), scored, atol=1e-5)
  if policy.lora is not None:
    base = np.asarray(tiny_policy().token_logprobs(full, full_mask))[:, ids.shape[1]:]
    assert np.abs(base - scored).max() > 1e-3


def test_sampling_config_validation():
  with pytest.raises(ValueError, match="top_p"):
    SamplingConfig(top_p=0.0)
  with pytest.raises(ValueError, match="stop_sequences"):
    SamplingConfig(stop_sequences=((),))
