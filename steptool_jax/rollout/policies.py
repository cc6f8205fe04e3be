"""Policies that act in batched episodes: a model generating with a KV cache, or a script.

An `ActionPolicy` maps a batch of `ActionRequest`s (the episode so far and its token
context) to one `Action` each: the text the environment reads, the tokens that go into the
dialogue (and later into the training row) and, for a model, their behaviour log-probs.

`model_policy` left-pads the contexts, pads the batch to a few fixed sizes and the width to
a few fixed lengths (so `generate` compiles a handful of times, not once per batch), and
splits every generated row at its stop (`stopping.py`). `text_policy` wraps a function
from episodes to action texts (the scripted expert, a give-up agent) in the same interface.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from steptool_jax.data.batching import bucket_length
from steptool_jax.envs import episode as env
from steptool_jax.models.config import ModelConfig
from steptool_jax.models.generate import Generation, SamplingConfig, extend_and_generate, generate_with_policy
from steptool_jax.models.llama import KVCache, init_cache
from steptool_jax.models.policy import Policy
from steptool_jax.rollout import stopping


@dataclasses.dataclass(frozen=True)
class ActionRequest:
  """One episode waiting for its next action: the episode so far and the policy's context.

  `episode_id` stays the same over an episode's requests (`run_episodes`: the index of its
  task), so a policy can keep state per episode (the KV cache); None: no such state.
  """

  episode: env.Episode
  context_ids: tuple[int, ...]
  episode_id: int | None = None


@dataclasses.dataclass(frozen=True)
class Action:
  """One action as written by a policy.

  `text` is what the environment parses; `token_ids` are the action's tokens in the
  dialogue (stop marker included, a hallucinated next turn cut off); `logprobs` are
  `log pi(token | context)` of those tokens under the behaviour policy (None for scripts);
  `stop` says why the action ended (`stopping.EOS`, `TURN`, `LENGTH`, `SCRIPTED`).
  """

  text: str
  token_ids: tuple[int, ...]
  logprobs: tuple[float, ...] | None
  stop: str


class ActionPolicy(Protocol):
  def __call__(self, requests: Sequence[ActionRequest]) -> list[Action]:
    ...


def batch_buckets(max_batch: int) -> tuple[int, ...]:
  """Powers of two below `max_batch`, then `max_batch`: the batch sizes `generate` sees."""
  sizes, size = [], 1
  while size < max_batch:
    sizes.append(size)
    size *= 2
  return tuple(sizes) + (max_batch,)


def width_buckets(max_context_len: int, step: int = 128) -> tuple[int, ...]:
  """Multiples of `step` up to `max_context_len` (and it): the prompt widths `generate` sees."""
  if step < 1:
    raise ValueError(f"width bucket step: expected >= 1, found {step}")
  return tuple(range(step, max_context_len, step)) + (max_context_len,)


def chunk_buckets(max_width: int, smallest: int = 32) -> tuple[int, ...]:
  """Powers of two from `smallest` below `max_width`, then `max_width`: the widths of the new
  tokens a cache-reusing policy prefills (an observation and the next header are short)."""
  if smallest < 1:
    raise ValueError(f"chunk bucket: expected a smallest width >= 1, found {smallest}")
  sizes, size = [], smallest
  while size < max_width:
    sizes.append(size)
    size *= 2
  return tuple(sizes) + (max_width,)


def _left_pad(rows: Sequence[Sequence[int]], width: int, num_rows: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  ids = np.full((num_rows, width), pad_id, np.int32)
  mask = np.zeros((num_rows, width), np.int32)
  for i in range(num_rows):
    row = rows[i] if i < len(rows) else rows[0]  # filler rows repeat a real one (they stop alike)
    ids[i, width - len(row):] = row
    mask[i, width - len(row):] = 1
  return ids, mask


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
  n = min(len(a), len(b))
  differ = np.flatnonzero(np.asarray(a[:n], np.int64) != np.asarray(b[:n], np.int64))
  return int(differ[0]) if differ.size else n


@dataclasses.dataclass
class _CacheBox:
  """One generation call's cache, shared by the episodes of its rows; `None` once released."""
  cache: KVCache | None


@dataclasses.dataclass(frozen=True)
class _CachedRow:
  """Where an episode's cache is kept: row `row` of `box` holds exactly `tokens` (the context
  it was given and every token generated after it) in slots `[start, start + len(tokens))`."""
  box: _CacheBox
  row: int
  start: int
  tokens: tuple[int, ...]


def _shifted(x: jax.Array, rows: jax.Array, shift: jax.Array, slots: int) -> jax.Array:
  """`x [L, B', S, ...]` re-laid into `slots` slots: row b of the result is row `rows[b]`
  moved by `-shift[b]` slots."""
  source_slots = jnp.clip(jnp.arange(slots)[None, :] + shift[:, None], 0, x.shape[2] - 1)
  return x[:, rows[:, None], source_slots]


@functools.partial(jax.jit, static_argnums=(3,))
def _pick_rows(source: KVCache, rows: jax.Array, shift: jax.Array, slots: int) -> tuple[jax.Array, jax.Array]:
  return _shifted(source.k, rows, shift, slots), _shifted(source.v, rows, shift, slots)


@functools.partial(jax.jit, donate_argnums=(0, 1))
def _place_rows(k: jax.Array, v: jax.Array, source: KVCache, rows: jax.Array, shift: jax.Array,
                select: jax.Array) -> tuple[jax.Array, jax.Array]:
  chosen, slots = select[None, :, None, None, None], k.shape[2]
  return (jnp.where(chosen, _shifted(source.k, rows, shift, slots), k),
          jnp.where(chosen, _shifted(source.v, rows, shift, slots), v))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _empty_kv(config: ModelConfig, batch: int, slots: int) -> tuple[jax.Array, jax.Array]:
  cache = init_cache(config, batch, slots)
  return cache.k, cache.v


class ModelPolicy:
  """The generating `ActionPolicy` that `model_policy` returns.

  `stats` counts its work over all calls: `calls` (generation calls), `context_tokens` (real
  context tokens of the requests), `prefill_tokens` (of those, the ones run through the model:
  all of them when re-prefilling, only the new ones when reusing the cache), `padded_prefill`
  (prefill slots computed, padding and filler rows included) and `generated_tokens`.
  """

  def __init__(self, policy: Policy, tokenizer: Any, stops: stopping.ActionStops, sampling: SamplingConfig,
               rng: jax.Array, *, template: str, max_batch: int, widths: Sequence[int], use_lora: bool,
               reuse_cache: bool, chunk_widths: Sequence[int] | None, bucketed_capacity: bool):
    self.policy, self.tokenizer, self.stops, self.template = policy, tokenizer, stops, template
    self.sampling = dataclasses.replace(sampling, eos_ids=stops.stop_ids, stop_sequences=stops.stop_sequences)
    self.rng, self.max_batch, self.widths, self.use_lora = rng, max_batch, tuple(widths), use_lora
    self.reuse_cache = reuse_cache
    # By default, powers of two up to the smallest width (an observation and the next header
    # are short), then the widths themselves (a first prompt, a re-prefilled context).
    self.chunk_widths = (tuple(chunk_widths) if chunk_widths is not None
                         else tuple(sorted(set(chunk_buckets(min(self.widths)) + self.widths))))
    if max(self.chunk_widths) < max(self.widths):
      raise ValueError(f"chunk_widths: the largest ({max(self.chunk_widths)}) must hold a whole context "
                       f"(the largest width, {max(self.widths)})")
    # Every row's cache holds its whole context (or the block of new tokens) and the new action.
    new = self.sampling.max_new_tokens
    self.capacities = (tuple(w + new for w in self.widths) if bucketed_capacity
                       else (max(self.widths + self.chunk_widths) + new,))
    if max(self.chunk_widths) > max(self.widths):
      self.capacities += (max(self.chunk_widths) + new,)
    self.sizes = batch_buckets(max_batch)
    self.stats = dict(calls=0, context_tokens=0, prefill_tokens=0, padded_prefill=0, generated_tokens=0)
    self._rows: dict[int, _CachedRow] = {}

  def __call__(self, requests: Sequence[ActionRequest]) -> list[Action]:
    chunks = [list(requests[start:start + self.max_batch]) for start in range(0, len(requests), self.max_batch)]
    plans = []
    if self.reuse_cache:
      # An episode not asked for in this call is finished (run_episodes asks every running one):
      # its cache is released, and every other cache once the last chunk that reads it is done.
      previous, self._rows = self._rows, {}
      plans = [self._plan(chunk, previous) for chunk in chunks]
      last_use: dict[int, int] = {}
      for j, plan in enumerate(plans):
        for source, _ in plan:
          if source is not None:
            last_use[id(source.box)] = j
      for state in previous.values():
        if id(state.box) not in last_use:
          state.box.cache = None
    actions: list[Action] = []
    for j, chunk in enumerate(chunks):
      key = jax.random.fold_in(self.rng, self.stats["calls"])
      self.stats["calls"] += 1
      self.stats["context_tokens"] += sum(len(r.context_ids) for r in chunk)
      if self.reuse_cache:
        out = self._extend(chunk, plans[j], key)
        for state in previous.values():
          if last_use.get(id(state.box)) == j:
            state.box.cache = None
      else:
        out = self._reprefill(chunk, key)
      for i in range(len(chunk)):
        actions.append(self._action(out, i))
      self.stats["generated_tokens"] += int(np.sum(out.lengths[:len(chunk)]))
    return actions

  def _reprefill(self, chunk: Sequence[ActionRequest], key: jax.Array) -> Generation:
    contexts = [r.context_ids for r in chunk]
    width = bucket_length(max(len(c) for c in contexts), self.widths)
    ids, mask = _left_pad(contexts, width, bucket_length(len(chunk), self.sizes), self.sampling.pad_id)
    self.stats["prefill_tokens"] += sum(len(c) for c in contexts)
    self.stats["padded_prefill"] += ids.size
    return jax.device_get(generate_with_policy(self.policy, ids, mask, key, self.sampling, use_lora=self.use_lora))

  def _plan(self, chunk: Sequence[ActionRequest],
            previous: dict[int, _CachedRow]) -> list[tuple[_CachedRow | None, int]]:
    """Per row: the cache row to continue (None: a fresh one) and how many of its tokens stay.

    The kept tokens are the longest common prefix of what the row holds and the new context:
    the dialogue so far, without tokens decoded past a cut action; after a left truncation
    (every position moved) only the BOS, i.e. a full prefill. At least one token is new, so
    the prefill yields the next logits.
    """
    plan = []
    for request in chunk:
      context = request.context_ids
      bucket_length(len(context), self.widths)  # a context past the largest width is an error, as when re-prefilling
      state = previous.get(request.episode_id) if request.episode_id is not None else None
      keep = 0
      if state is not None and state.box.cache is not None:
        keep = min(common_prefix_length(state.tokens, context), len(context) - 1)
      plan.append((state if keep > 0 else None, keep))
    return plan

  def _layout(self, plan: Sequence[tuple[_CachedRow | None, int]], lengths: np.ndarray, end: int,
              index: int, slots: int) -> KVCache:
    """The cache of a chunk: row b's kept tokens moved so that its context will end at slot
    `end` (as left padding lays out a prompt), the rest of its slots masked, the new tokens
    to be written from `index`. One gather per source cache; fresh rows get whatever the
    gather gives (masked)."""
    batch = len(plan)
    start = end - lengths  # where each row's context begins
    keep = np.asarray([k for _, k in plan])
    slot = np.arange(slots)[None, :]
    mask = ((slot >= start[:, None]) & (slot < (start + keep)[:, None])).astype(np.int32)
    by_box: dict[int, list[int]] = {}
    for i, (source, _) in enumerate(plan):
      if source is not None:
        by_box.setdefault(id(source.box), []).append(i)
    if not by_box:
      k, v = _empty_kv(self.policy.config, batch, slots)
    for j, members in enumerate(sorted(by_box.values(), key=len, reverse=True)):
      box = plan[members[0]][0].box
      rows, shift = np.zeros(batch, np.int32), np.zeros(batch, np.int32)
      for i in members:
        rows[i], shift[i] = plan[i][0].row, plan[i][0].start - start[i]
      if j == 0:
        k, v = _pick_rows(box.cache, rows, shift, slots)
      else:
        k, v = _place_rows(k, v, box.cache, rows, shift, np.isin(np.arange(batch), members))
    return KVCache(k=k, v=v, mask=jnp.asarray(mask), index=jnp.asarray(index, jnp.int32))

  def _extend(self, chunk: Sequence[ActionRequest], plan: list[tuple[_CachedRow | None, int]],
              key: jax.Array) -> Generation:
    batch = bucket_length(len(chunk), self.sizes)
    rows = plan + [plan[0]] * (batch - len(chunk))  # filler rows repeat row 0, as when re-prefilling
    contexts = [r.context_ids for r in chunk]
    contexts += [contexts[0]] * (batch - len(chunk))
    new = [context[k:] for context, (_, k) in zip(contexts, rows)]
    width = bucket_length(max(len(n) for n in new), self.chunk_widths)
    lengths = np.asarray([len(c) for c in contexts])
    end = max(int(lengths.max()), width)  # every context ends at this slot, the new tokens' block before it
    ids, mask = _left_pad(new, width, batch, self.sampling.pad_id)
    self.stats["prefill_tokens"] += sum(len(n) for n in new[:len(chunk)])
    self.stats["padded_prefill"] += ids.size
    slots = bucket_length(end + self.sampling.max_new_tokens, self.capacities)
    cache = self._layout(rows, lengths, end, end - width, slots)
    out, cache = extend_and_generate(self.policy.config, self.policy.variables, cache, ids, mask, key,
                                     self.sampling, lora=self.policy.lora, use_lora=self.use_lora)
    out = jax.device_get(out)
    box = _CacheBox(cache)
    for i, request in enumerate(chunk):
      if request.episode_id is not None:
        generated = tuple(int(t) for t in out.tokens[i, :out.lengths[i]])
        self._rows[request.episode_id] = _CachedRow(box, i, end - len(request.context_ids),
                                                    tuple(request.context_ids) + generated)
    return out

  def _action(self, out: Generation, i: int) -> Action:
    tokens = [int(t) for t in out.tokens[i, :out.lengths[i]]]
    cut = stopping.split_action(tokens, bool(out.stopped[i]), self.stops)
    kept = tokens[:cut.length]
    text = self.tokenizer.decode(kept[:len(kept) - cut.end_length], skip_special_tokens=False)
    return Action(text=stopping.cut_at_turn_header(text, self.template), token_ids=tuple(kept),
                  logprobs=tuple(float(x) for x in out.logprobs[i, :cut.length]), stop=cut.stop)


def model_policy(policy: Policy, tokenizer: Any, stops: stopping.ActionStops, sampling: SamplingConfig,
                 rng: jax.Array, *, template: str, max_batch: int, widths: Sequence[int],
                 use_lora: bool = True, reuse_cache: bool = True, chunk_widths: Sequence[int] | None = None,
                 bucketed_capacity: bool = True) -> ModelPolicy:
  """A generating policy. `sampling.eos_ids`/`stop_sequences` are replaced by `stops`.

  Requests are answered `max_batch` at a time, in order; each such call draws fresh
  randomness from `rng` (folded with a call counter), so a run is reproducible from `rng`.
  Batches are padded to `batch_buckets(max_batch)` rows (filler rows repeat the first one).

  `reuse_cache=True` (the default): every episode keeps its KV cache from one call to the
  next (keyed by `ActionRequest.episode_id`), and the next action prefills only the tokens
  its context adds (the previous action's tail is dropped where the action was cut, see
  `_plan`), left-padded to one of `chunk_widths` (default: `chunk_buckets(min(widths))`, then
  `widths`).
  Each call re-lays the kept rows (one gather) into a cache where every row's context ends
  at the same slot, as a left-padded prompt would, so decoding is `generate`'s loop
  (`generate.extend_and_generate`). Its slots are `width + max_new_tokens` for the smallest
  of `widths` that holds the call's contexts, as when re-prefilling (`bucketed_capacity=False`:
  always the largest, one decode compilation per batch size but attention over every slot
  at each step). A left-truncated context re-prefills. `reuse_cache=False`: every action re-prefills its
  whole context, left-padded to one of `widths` (`generate.generate`).

  The slots hold any context the widths admit (a longer one is an error on both paths), so
  no context needs a fallback for capacity.

  Both give the same actions, stops and rollouts from the same `rng`, and log-probs equal
  to float rounding, not bitwise (the tests observe < 2e-6 on the tiny model and assert
  1e-5): a cached key was computed in another matmul shape (an earlier prefill, one decode
  step) than one prefill of the whole context, so the last bits may differ; a greedy or
  sampled token could differ only at a near-tie of two logits. The cache costs memory:
  every running episode keeps its call's slots per layer between calls (and, during a call,
  the chunk being built besides).
  """
  return ModelPolicy(policy, tokenizer, stops, sampling, rng, template=template, max_batch=max_batch,
                     widths=widths, use_lora=use_lora, reuse_cache=reuse_cache, chunk_widths=chunk_widths,
                     bucketed_capacity=bucketed_capacity)


def text_policy(write: Callable[[env.Episode], str], tokenizer: Any, *, eos_id: int | None = None) -> ActionPolicy:
  """A scripted policy: `write(episode)` is the next action's text. Its tokens are the
  tokenised text (+ `eos_id`, as a model trained with EOS after actions would end it)."""

  def act(requests: Sequence[ActionRequest]) -> list[Action]:
    texts = [write(r.episode) for r in requests]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    suffix = () if eos_id is None else (int(eos_id),)
    return [Action(text=text, token_ids=tuple(ids) + suffix, logprobs=None, stop=stopping.SCRIPTED)
            for text, ids in zip(texts, encoded)]

  return act
