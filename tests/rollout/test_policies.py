"""A generating policy that keeps each episode's KV cache across turns plays exactly the
rollouts of one that re-prefills every context: same prompts, action tokens, texts, stops
and outcomes, log-probs equal to float rounding; greedy and sampled, with left truncation
of the context and without, with filler rows and a batch that shrinks as episodes end."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from steptool_jax.envs import episode as env
from steptool_jax.envs.tasks import generate_tasks
from steptool_jax.models.generate import SamplingConfig
from steptool_jax.rollout import stopping
from steptool_jax.rollout.episodes import run_episodes
from steptool_jax.rollout.policies import chunk_buckets, common_prefix_length, model_policy
from steptool_jax.rollout.scripted import GIVE_UP_ACTION
from tests.rollout.tiny_policy import MAX_BATCH, MAX_CONTEXT_LEN, MAX_NEW_TOKENS, builtin_tokenizer, tiny_policy

LOGP_TOLERANCE = 1e-5  # observed: < 2e-6
# With cache reuse the cache grows from 392 to 520 slots as contexts pass 384 tokens; the
# re-prefilled reference pads every context to 512 (the layouts differ, the rollouts may not).
WIDTHS = (384, MAX_CONTEXT_LEN)
NUM_TASKS = 15  # 4 + 4 + 4 + 3 requests in the first round, then 11, 7, 3: always batch 4, with filler rows
MAX_STEPS = 4


def varied_stops():
  """The toolllama stops plus tokens this random policy writes often, so its actions end in
  every way at varied lengths (EOS, a cut-off turn header, the token limit)."""
  base = stopping.action_stops(builtin_tokenizer(), "toolllama")
  return stopping.ActionStops(ends=base.ends + ((1022,), (100,)), turns=base.turns + ((1267, 740), (1141,), (336,)))


def ending(policy):
  """Episode i gives up at step i % 4 (the last group runs into the step limit), whatever the
  model wrote, so episodes finish in every round."""
  def act(requests):
    actions = policy(requests)
    return [dataclasses.replace(action, text=GIVE_UP_ACTION) if r.episode.num_steps == r.episode_id % 4 else action
            for r, action in zip(requests, actions)]
  return act


@pytest.fixture(scope="module")
def tasks():
  return list(generate_tasks(60, seed=2)["train"])[:NUM_TASKS]


_PLAYED: dict = {}


def play(tasks, *, reuse_cache: bool, max_context_len: int = MAX_CONTEXT_LEN, temperature: float = 0.0,
         key: int = 0, policy=None):
  """The rollouts and the policy (memoised: tests share runs)."""
  name = (reuse_cache, max_context_len, temperature, key)
  if policy is None and name in _PLAYED:
    return _PLAYED[name]
  tokenizer = builtin_tokenizer()
  if policy is None:
    policy = model_policy(tiny_policy(), tokenizer, varied_stops(),
                          SamplingConfig(max_new_tokens=MAX_NEW_TOKENS, temperature=temperature), jax.random.key(key),
                          template="toolllama", max_batch=MAX_BATCH,
                          widths=WIDTHS if reuse_cache else (MAX_CONTEXT_LEN,),
                          reuse_cache=reuse_cache)
  rollouts = run_episodes(tasks, ending(policy), tokenizer, bos_id=1, max_context_len=max_context_len,
                          env_config=env.EnvConfig(max_steps=MAX_STEPS))
  _PLAYED[name] = rollouts, policy
  return rollouts, policy


def assert_same_rollouts(a, b) -> float:
  """Everything equal, log-probs to `LOGP_TOLERANCE`; returns the largest log-prob difference."""
  worst = 0.0
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.prompts == y.prompts and x.prompt_ids == y.prompt_ids and x.outcomes == y.outcomes
    assert x.episode.actions == y.episode.actions and len(x.actions) == len(y.actions)
    for p, q in zip(x.actions, y.actions):
      assert (p.token_ids, p.text, p.stop) == (q.token_ids, q.text, q.stop)
      np.testing.assert_allclose(p.logprobs, q.logprobs, atol=LOGP_TOLERANCE, rtol=0)
      worst = max(worst, float(np.max(np.abs(np.subtract(p.logprobs, q.logprobs)))))
  return worst


def context_lengths(rollouts) -> list[list[int]]:
  """Per episode, the untruncated length of the context before each action (BOS included)."""
  out = []
  for r in rollouts:
    lengths, length = [], 1
    for prompt, action in zip(r.prompt_ids, r.actions):
      length += len(prompt)
      lengths.append(length)
      length += len(action.token_ids)
    out.append(lengths)
  return out


def truncated_steps(rollouts, max_context_len: int) -> tuple[int, int]:
  """(steps whose context was left-truncated, steps after the first that were not)."""
  lengths = context_lengths(rollouts)
  cut = sum(n > max_context_len for row in lengths for n in row)
  kept = sum(n <= max_context_len for row in lengths for n in row[1:])
  return cut, kept


@pytest.mark.parametrize("max_context_len", [MAX_CONTEXT_LEN, 320], ids=["whole", "truncated"])
def test_greedy_rollouts_with_cache_reuse_equal_reprefilled_ones(tasks, max_context_len):
  cached, cached_policy = play(tasks, reuse_cache=True, max_context_len=max_context_len)
  fresh, fresh_policy = play(tasks, reuse_cache=False, max_context_len=max_context_len)
  # The cases that matter happen: episodes end in every round, actions end in every way, some
  # at a turn header past their first tokens (decoded tokens cut off), contexts are truncated
  # (or not) and the next context also fits for some (the cache is reused).
  assert sorted({r.num_steps for r in cached}) == [1, 2, 3, 4]
  stops = {a.stop for r in cached for a in r.actions}
  assert stops == {stopping.EOS, stopping.TURN, stopping.LENGTH}
  assert any(a.stop == stopping.TURN and len(a.token_ids) > 1 for r in cached for a in r.actions)
  assert len({len(a.token_ids) for r in cached for a in r.actions}) >= 4
  cut, kept = truncated_steps(cached, max_context_len)
  assert kept > 0 and (cut > 0) == (max_context_len < MAX_CONTEXT_LEN)
  longest = [max(min(row[step], max_context_len) for row in context_lengths(cached) if len(row) > step)
             for step in range(MAX_STEPS)]
  if max_context_len == MAX_CONTEXT_LEN:  # the first rounds fit the smaller width, later ones do not
    assert longest[0] <= WIDTHS[0] < longest[-1]
  worst = assert_same_rollouts(cached, fresh)
  assert worst < LOGP_TOLERANCE
  stats, fresh_stats = cached_policy.stats, fresh_policy.stats
  assert stats["context_tokens"] == fresh_stats["context_tokens"] == fresh_stats["prefill_tokens"]
  assert stats["prefill_tokens"] < fresh_stats["prefill_tokens"]
  assert stats["generated_tokens"] == fresh_stats["generated_tokens"]


def test_sampled_rollouts_depend_on_the_key_only(tasks):
  """Temperature 1: both paths draw the same tokens from the same key (the same noise per
  call and row, and logits equal to rounding); another key draws others."""
  cached, _ = play(tasks, reuse_cache=True, temperature=1.0)
  fresh, _ = play(tasks, reuse_cache=False, temperature=1.0)
  assert_same_rollouts(cached, fresh)
  greedy, _ = play(tasks, reuse_cache=True)
  other, _ = play(tasks, reuse_cache=True, temperature=1.0, key=1)
  tokens = lambda rollouts: [a.token_ids for r in rollouts for a in r.actions]
  assert tokens(cached) != tokens(greedy) and tokens(cached) != tokens(other)


def test_a_policy_played_again_reuses_only_what_matches(tasks):
  """A second run with the same policy finds the first run's caches under the same episode
  ids: only the common prefix (the BOS, the system prompt of the same task) is reused, and
  greedy rollouts stay exact."""
  first, policy = play(tasks, reuse_cache=True)
  prefilled = policy.stats["prefill_tokens"]
  again, _ = play(tasks, reuse_cache=True, policy=policy)
  assert_same_rollouts(again, first)
  # The episodes of the last round left their caches; each one's first context (BOS + the
  # first prompt) is now prefilled but for its last token.
  last_round = [r for r in first if r.num_steps == MAX_STEPS]
  assert len(last_round) == 3
  saved = sum(len(r.prompt_ids[0]) for r in last_round)
  assert policy.stats["prefill_tokens"] - prefilled == prefilled - saved


def test_chunk_buckets_and_common_prefix():
  assert chunk_buckets(512) == (32, 64, 128, 256, 512) and chunk_buckets(300, 64) == (64, 128, 256, 300)
  assert chunk_buckets(16) == (16,)
  assert common_prefix_length((1, 2, 3), (1, 2, 4, 5)) == 2 and common_prefix_length((1, 2), (1, 2, 3)) == 2
  assert common_prefix_length((), (1,)) == 0
  with pytest.raises(ValueError, match="chunk_widths"):
    model_policy(tiny_policy(), builtin_tokenizer(), varied_stops(), SamplingConfig(), jax.random.key(0),
                 template="toolllama", max_batch=2, widths=(512,), chunk_widths=(64,))
