"""Generation: stopping on EOS and stop sequences, top-p, sampling (greedy parity with HF is in
test_hf_parity.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from steptool_jax.models import SamplingConfig, extend_and_generate, generate_with_policy, init_cache, left_pad
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


def test_extending_a_cache_equals_generating_from_the_whole_prompt(greedy):
  """Two rounds on one cache. The first generates from parts of the prompts (rows stop at
  different steps and go on feeding pads). The second keeps a prefix of each row (its prompt
  part, less, only the BOS, nothing: the other slots' mask cleared, their keys left in place)
  and adds the rest of `PROMPTS` in a block placed so that a row's padding lies over its own
  kept tokens. Reference: `generate` on the whole prompts (identical greedy tokens, log-probs
  to rounding); the cache ends holding exactly each prompt and its generated tokens."""
  policy, width, slots = tiny_policy(), 8, 24
  first = [PROMPTS[0][:3], PROMPTS[1], PROMPTS[2][:1], [7, 7]]
  keep = [3, 2, 1, 0]
  ids1, mask1 = (np.pad(x, ((0, 0), (width - x.shape[1], 0))) for x in left_pad(first, pad_id=0))
  extend = lambda cache, ids, mask, sampling: extend_and_generate(policy.config, policy.variables, cache, ids, mask,
                                                                 jax.random.key(0), sampling)
  out1, cache = extend(init_cache(policy.config, len(first), slots), ids1, mask1,
                       SamplingConfig(max_new_tokens=NEW, eos_ids=(int(greedy[1, 2]),)))
  lengths1 = np.asarray(out1.lengths)
  assert lengths1.min() < NEW and lengths1.max() == NEW  # some rows fed pads after their stop
  slot_of = [width - len(row) + np.arange(len(row)) for row in first]  # where round 1 put each prompt
  mask = np.zeros((len(first), slots), np.int32)
  for b, k in enumerate(keep):
    mask[b, slot_of[b][:k]] = 1
  new = [prompt[k:] for prompt, k in zip(PROMPTS, keep)]
  index = max(int(slot_of[b][keep[b] - 1]) + 1 + len(new[b]) - width for b in range(3))
  assert index < int(slot_of[0][-1])  # row 0's padding lies over its kept tokens: they must survive
  ids2, mask2 = left_pad(new, pad_id=0)
  ids2, mask2 = (np.pad(x, ((0, 0), (width - x.shape[1], 0))) for x in (ids2, mask2))
  out2, cache = extend(cache.replace(mask=jnp.asarray(mask), index=jnp.int32(index)), ids2, mask2,
                       SamplingConfig(max_new_tokens=NEW))
  reference = run(SamplingConfig(max_new_tokens=NEW))
  np.testing.assert_array_equal(np.asarray(out2.tokens), greedy)
  np.testing.assert_allclose(np.asarray(out2.logprobs), np.asarray(reference.logprobs), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(cache.mask).sum(-1), [len(p) + NEW for p in PROMPTS])


def test_sampling_config_validation():
  with pytest.raises(ValueError, match="top_p"):
    SamplingConfig(top_p=0.0)
  with pytest.raises(ValueError, match="stop_sequences"):
    SamplingConfig(stop_sequences=((),))
