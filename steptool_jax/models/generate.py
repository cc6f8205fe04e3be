"""Batched generation with a KV cache: one prefill, then a jitted `while_loop` of decode steps.

Prompts are left-padded so every row's next token goes into the same cache slot; position
ids count real tokens only, so padding does not shift them. Sampling is greedy
(`temperature=0`) or temperature + nucleus (top-p). A row stops at an EOS id or when its
newest tokens equal one of the stop sequences (token ids; `stop_sequences_from_strings`
makes them from text); the loop ends when every row has stopped or `max_new_tokens` is
reached.

`extend_and_generate` continues prompts whose earlier tokens are already in a cache (an
episode's dialogue kept across its turns): only the new tokens are prefilled, written after
each row's earlier ones; the caller lays the rows out so that every row's prompt ends at the
same slot (`rollout.policies` re-lays kept rows with one gather per call), so decoding is
exactly `generate`'s loop.

Returned log-probs are those of the *model* distribution (`log_softmax` of the raw logits,
no temperature or top-p), i.e. `log pi(token | context)` as the trainer recomputes it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp

from steptool_jax.models.config import LoraConfig, ModelConfig
from steptool_jax.models.llama import CausalLM, KVCache, init_cache, positions_from_mask
from steptool_jax.models.policy import Policy, trunk_variables


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """`temperature=0` is greedy; otherwise sample from softmax(logits / T) restricted to top-p."""
  max_new_tokens: int = 64
  temperature: float = 0.0
  top_p: float = 1.0
  eos_ids: tuple[int, ...] = ()
  stop_sequences: tuple[tuple[int, ...], ...] = ()
  pad_id: int = 0

  def __post_init__(self):
    if self.max_new_tokens <= 0:
      raise ValueError(f"max_new_tokens: expected a positive integer, got {self.max_new_tokens}")
    if self.temperature < 0:
      raise ValueError(f"temperature: expected >= 0, got {self.temperature}")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"top_p: expected a value in (0, 1], got {self.top_p}")
    object.__setattr__(self, "eos_ids", tuple(int(i) for i in self.eos_ids))
    object.__setattr__(self, "stop_sequences", tuple(tuple(int(i) for i in s) for s in self.stop_sequences))
    if any(len(s) == 0 for s in self.stop_sequences):
      raise ValueError("stop_sequences: empty stop sequence")


@flax.struct.dataclass
class Generation:
  """`tokens [B, N]` (pad after a row stopped; the EOS/stop tokens are included),
  `logprobs [B, N]` (0 on padding), `lengths [B]` new tokens per row, `stopped [B]` (True when
  the row hit EOS or a stop sequence rather than the token limit)."""
  tokens: jnp.ndarray
  logprobs: jnp.ndarray
  lengths: jnp.ndarray
  stopped: jnp.ndarray


def top_p_filter(logits: jnp.ndarray, top_p: jnp.ndarray | float) -> jnp.ndarray:
  """Logits with every token outside the smallest set of mass >= top_p set to -inf.

  A token is kept when the mass of the strictly more likely tokens is below `top_p`, so the
  most likely token always survives; `top_p >= 1` keeps everything.
  """
  probs = jax.nn.softmax(logits, axis=-1)
  sorted_probs = jnp.sort(probs, axis=-1)[..., ::-1]
  mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
  kept = (mass_before < top_p) | (top_p >= 1.0)
  # The smallest kept probability is the threshold; ties at the threshold are all kept.
  threshold = jnp.min(jnp.where(kept, sorted_probs, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(probs >= threshold, logits, -jnp.inf)


def sample_token(logits: jnp.ndarray, rng: jax.Array, temperature: jnp.ndarray,
                 top_p: jnp.ndarray) -> jnp.ndarray:
  """`[B]` next tokens from `[B, V]` float32 logits; `temperature == 0` is greedy.

  Temperature and top-p are traced values, so changing them does not recompile.
  """
  def sample(logits: jnp.ndarray) -> jnp.ndarray:
    scaled = logits / jnp.maximum(temperature, 1e-6)
    # The sort behind top-p costs a pass over the vocabulary: skip it when top_p = 1.
    scaled = jax.lax.cond(top_p < 1.0, lambda x: top_p_filter(x, top_p), lambda x: x, scaled)
    return jax.random.categorical(rng, scaled, axis=-1).astype(jnp.int32)

  greedy = lambda logits: jnp.argmax(logits, axis=-1).astype(jnp.int32)
  return jax.lax.cond(temperature > 0.0, sample, greedy, logits)


def stop_table(stop_sequences: tuple[tuple[int, ...], ...]) -> jnp.ndarray:
  """`[S, M]` stop sequences, right-aligned, -1 where a shorter sequence has no token."""
  width = max((len(s) for s in stop_sequences), default=1)
  rows = [[-1] * (width - len(s)) + list(s) for s in stop_sequences]
  return jnp.asarray(rows, jnp.int32).reshape(len(rows), width)


def ends_with_stop(tokens: jnp.ndarray, step: jnp.ndarray, table: jnp.ndarray) -> jnp.ndarray:
  """`[B]`: whether `tokens[:, :step + 1]` ends with one of the sequences of `table [S, M]`."""
  width = table.shape[1]
  # Slots before the first generated token hold -2, which matches no sequence token.
  padded = jnp.pad(tokens, ((0, 0), (width - 1, 0)), constant_values=-2)
  window = jax.lax.dynamic_slice_in_dim(padded, step, width, axis=1)  # tokens step-M+1 .. step
  match = (table[None] == -1) | (window[:, None, :] == table[None])  # [B, S, M]
  return jnp.any(jnp.all(match, axis=-1), axis=-1)


def generate(config: ModelConfig, variables: Any, prompt_ids: jnp.ndarray, prompt_mask: jnp.ndarray,
             rng: jax.Array, sampling: SamplingConfig, *, lora: LoraConfig | None = None,
             use_lora: bool = True) -> Generation:
  """Continues left-padded prompts `[B, P]`; see the module docstring.

  Compiled once per (config, prompt shape, max_new_tokens, number/length of stop
  sequences); temperature, top-p, EOS ids and stop tokens are traced values.
  A right-padded batch must be left-padded first (`left_pad`).
  """
  return _generate(config, lora, use_lora, sampling.max_new_tokens, variables,
                   jnp.asarray(prompt_ids, jnp.int32), jnp.asarray(prompt_mask, jnp.int32), rng, _controls(sampling))


def generate_with_policy(policy: Policy, prompt_ids: jnp.ndarray, prompt_mask: jnp.ndarray,
                         rng: jax.Array, sampling: SamplingConfig, *, use_lora: bool = True) -> Generation:
  return generate(policy.config, policy.variables, prompt_ids, prompt_mask, rng, sampling,
                  lora=policy.lora, use_lora=use_lora)


def _controls(sampling: SamplingConfig) -> dict[str, jnp.ndarray]:
  return dict(
      temperature=jnp.float32(sampling.temperature), top_p=jnp.float32(sampling.top_p),
      eos_ids=jnp.asarray(sampling.eos_ids or (-1,), jnp.int32),
      stop_table=stop_table(sampling.stop_sequences), pad_id=jnp.int32(sampling.pad_id))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _generate(config: ModelConfig, lora: LoraConfig | None, use_lora: bool, max_new_tokens: int,
              variables: Any, prompt_ids: jnp.ndarray, prompt_mask: jnp.ndarray, rng: jax.Array,
              controls: dict[str, jnp.ndarray]) -> Generation:
  model = CausalLM(config, lora)
  trunk = trunk_variables(variables, use_lora)
  batch, prompt_len = prompt_ids.shape
  cache = init_cache(config, batch, prompt_len + max_new_tokens)
  hidden, cache = model.apply(trunk, prompt_ids, prompt_mask, positions_from_mask(prompt_mask),
                              cache, method=CausalLM.hidden_states)
  logits = model.apply({"params": variables["params"]}, hidden[:, -1], method=CausalLM.logits)
  generation, _ = _decode(model, variables, trunk, max_new_tokens, cache, logits,
                          jnp.sum(prompt_mask, axis=-1).astype(jnp.int32), rng, controls)
  return generation


def _decode(model: CausalLM, variables: Any, trunk: Any, n: int, cache: KVCache, logits: jnp.ndarray,
            next_position: jnp.ndarray, rng: jax.Array,
            controls: dict[str, jnp.ndarray]) -> tuple[Generation, KVCache]:
  """The decode loop from the prompt's last logits `[B, V]`; returns the final cache too.

  Each step's token is fed as a real token only for rows still running: a stopped row's pad
  goes in as padding, which leaves its slot empty, so the cache ends up holding exactly the
  prompt and the generated tokens of every row.
  """
  batch = logits.shape[0]
  pad_id = controls["pad_id"]

  def step_fn(state: dict[str, Any]) -> dict[str, Any]:
    step, rng = state["step"], state["rng"]
    rng, key = jax.random.split(rng)
    token = sample_token(state["logits"], key, controls["temperature"], controls["top_p"])
    logp = jnp.take_along_axis(jax.nn.log_softmax(state["logits"], axis=-1), token[:, None], axis=-1)[:, 0]
    done = state["done"]
    token = jnp.where(done, pad_id, token)
    tokens = state["tokens"].at[:, step].set(token)
    logprobs = state["logprobs"].at[:, step].set(jnp.where(done, 0.0, logp))
    running = (~done).astype(jnp.int32)
    lengths = state["lengths"] + running
    stopped = ~done & (jnp.isin(token, controls["eos_ids"])
                       | ends_with_stop(tokens, step, controls["stop_table"]))
    # Feed the token to get the next step's logits (wasted on the last step, 1/N of the work).
    positions = state["next_position"][:, None]
    hidden, cache = model.apply(trunk, token[:, None], running[:, None], positions,
                                state["cache"], method=CausalLM.hidden_states)
    next_logits = model.apply({"params": variables["params"]}, hidden[:, -1], method=CausalLM.logits)
    return dict(step=step + 1, rng=rng, logits=next_logits, cache=cache, tokens=tokens,
                logprobs=logprobs, lengths=lengths, done=done | stopped,
                stopped=state["stopped"] | stopped, next_position=state["next_position"] + running)

  def keep_going(state: dict[str, Any]) -> jnp.ndarray:
    return (state["step"] < n) & ~jnp.all(state["done"])

  state = dict(
      step=jnp.zeros((), jnp.int32), rng=rng, logits=logits, cache=cache,
      tokens=jnp.full((batch, n), pad_id, jnp.int32), logprobs=jnp.zeros((batch, n), jnp.float32),
      lengths=jnp.zeros((batch,), jnp.int32), done=jnp.zeros((batch,), bool),
      stopped=jnp.zeros((batch,), bool), next_position=next_position)
  state = jax.lax.while_loop(keep_going, step_fn, state)
  generation = Generation(tokens=state["tokens"], logprobs=state["logprobs"], lengths=state["lengths"],
                          stopped=state["stopped"])
  return generation, state["cache"]


def extend_and_generate(config: ModelConfig, variables: Any, cache: KVCache, new_ids: jnp.ndarray,
                        new_mask: jnp.ndarray, rng: jax.Array, sampling: SamplingConfig, *,
                        lora: LoraConfig | None = None, use_lora: bool = True) -> tuple[Generation, KVCache]:
  """Continues prompts whose earlier tokens are already in `cache`; see the module docstring.

  The left-padded new tokens `new_ids [B, W]` (`new_mask`, at least one real token per row)
  go into slots `[cache.index, cache.index + W)`; each row's earlier tokens (its `cache.mask`
  slots) must all come before its first new token, and may lie inside that block, under the
  row's padding (a padding token leaves its slot as it was). Position ids continue from the
  row's earlier tokens. Then decoding runs as in `generate`. Returns the generation and the
  cache after it (the generated tokens follow the prompts, pads of stopped rows left out);
  the cache needs `index + W + max_new_tokens` slots and is donated (its buffers are reused).

  With an empty cache this is `generate`. With earlier tokens, the numbers equal `generate`
  on the whole prompt up to float rounding: their keys and values were computed in other
  matmul shapes (another prefill, single decode steps) than one prefill of the whole prompt.
  The prefill compiles once per (config, batch, W, slots), the decode loop once per
  (config, batch, slots, max_new_tokens, number/length of stop sequences).
  """
  logits, cache = _extend_prefill(config, lora, use_lora, variables, cache, jnp.asarray(new_ids, jnp.int32),
                                  jnp.asarray(new_mask, jnp.int32))
  return _decode_cache(config, lora, use_lora, sampling.max_new_tokens, variables, cache, logits, rng,
                       _controls(sampling))


# The prefill and the decode loop compile apart: the loop once per batch size, whatever the
# width of the new tokens.
@functools.partial(jax.jit, static_argnums=(0, 1, 2), donate_argnums=(4,))
def _extend_prefill(config: ModelConfig, lora: LoraConfig | None, use_lora: bool, variables: Any, cache: KVCache,
                    new_ids: jnp.ndarray, new_mask: jnp.ndarray) -> tuple[jnp.ndarray, KVCache]:
  model = CausalLM(config, lora)
  hidden, cache = model.apply(trunk_variables(variables, use_lora), new_ids, new_mask, None, cache,
                              method=CausalLM.hidden_states)
  return model.apply({"params": variables["params"]}, hidden[:, -1], method=CausalLM.logits), cache


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3), donate_argnums=(5,))
def _decode_cache(config: ModelConfig, lora: LoraConfig | None, use_lora: bool, max_new_tokens: int, variables: Any,
                  cache: KVCache, logits: jnp.ndarray, rng: jax.Array,
                  controls: dict[str, jnp.ndarray]) -> tuple[Generation, KVCache]:
  next_position = jnp.sum(cache.mask, axis=-1).astype(jnp.int32)
  return _decode(CausalLM(config, lora), variables, trunk_variables(variables, use_lora), max_new_tokens, cache,
                 logits, next_position, rng, controls)


def left_pad(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Left-padded `[B, P]` ids and mask from a list of token lists (each non-empty)."""
  if not ids or any(len(row) == 0 for row in ids):
    raise ValueError("prompts: expected a non-empty list of non-empty token lists")
  width = max(len(row) for row in ids)
  padded = [[pad_id] * (width - len(row)) + list(row) for row in ids]
  mask = [[0] * (width - len(row)) + [1] * len(row) for row in ids]
  return jnp.asarray(padded, jnp.int32), jnp.asarray(mask, jnp.int32)


def stop_sequences_from_strings(tokenizer: Any, stop_strings: Sequence[str]) -> tuple[tuple[int, ...], ...]:
  """Token-id stop sequences for `stop_strings` (as the tokenizer encodes them standalone).

  A string that tokenizes differently inside a longer text will not match in the loop;
  truncating the decoded text at the stop string afterwards catches those cases.
  """
  return tuple(tuple(tokenizer.encode(s, add_special_tokens=False)) for s in stop_strings)
