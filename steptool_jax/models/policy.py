"""The policy: one trunk forward giving per-token log-probs, entropies and values, and the
`Policy` object (config + variables) that notebooks and scripts use.

Variables layout (a plain dict, so optax/orbax see an ordinary pytree):

    {"params": base model (frozen under LoRA training),
     "lora": adapters (only with a LoraConfig),
     "value_head": {"kernel": [embed], "bias": []}}

Every per-token output is `[B, T]` and aligned with `input_ids` (docs/conventions.md):
position `t` holds `log pi(input_ids[t] | input_ids[:t])` and the value head applied to the
hidden state at `t - 1`; positions without a real predecessor (position 0, padding, the
first real token of a left-padded row) hold 0.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from steptool_jax.models.config import LoraConfig, ModelConfig
from steptool_jax.models.llama import CausalLM
from steptool_jax.models.logprobs import chunked_token_logprobs, predecessor_states, predicted_mask
from steptool_jax.models.lora import LORA_COLLECTION, merge_lora
from steptool_jax.models.value_head import ValueHead

Variables = Mapping[str, Any]


@flax.struct.dataclass
class TokenScores:
  """Per-token outputs of one trunk forward, each `[B, T]` float32 (None when not asked for)."""
  logp: jnp.ndarray
  entropy: jnp.ndarray | None = None
  values: jnp.ndarray | None = None


def trunk_variables(variables: Variables, use_lora: bool) -> dict[str, Any]:
  """The collections `CausalLM.apply` needs; without `lora` the base model runs."""
  out = {"params": variables["params"]}
  if use_lora and variables.get(LORA_COLLECTION) is not None:
    out[LORA_COLLECTION] = variables[LORA_COLLECTION]
  return out


def score_tokens(model: CausalLM, variables: Variables, input_ids: jnp.ndarray,
                 attention_mask: jnp.ndarray, *, use_lora: bool = True, with_entropy: bool = False,
                 with_values: bool = True, value_head: ValueHead | None = None,
                 rngs: dict[str, jax.Array] | None = None, chunk_size: int = 512) -> TokenScores:
  """Log-probs of `input_ids`, optional entropies and values, from one trunk forward.

  This is the function the trainer calls: with `use_lora=False` the same variables give the
  reference policy's log-probs. Log-probs are computed in time chunks of `chunk_size`
  (see `logprobs.py`), so no `[B, T, V]` float32 tensor exists at once. Pass
  `model=CausalLM(..., deterministic=False)`, `value_head=ValueHead(..., deterministic=False)`
  and `rngs={"dropout": key}` to train with LoRA/value-head dropout.
  """
  hidden, _ = model.apply(trunk_variables(variables, use_lora), input_ids, attention_mask,
                          method=CausalLM.hidden_states, rngs=rngs)
  predictors = predecessor_states(hidden)
  valid = predicted_mask(attention_mask)
  logits_fn = lambda h: model.apply({"params": variables["params"]}, h, method=CausalLM.logits)
  logp, entropy = chunked_token_logprobs(predictors, input_ids, logits_fn, chunk_size=chunk_size,
                                         with_entropy=with_entropy)
  values = None
  if with_values:
    head = value_head if value_head is not None else ValueHead()
    values = head.apply({"params": variables["value_head"]}, predictors, rngs=rngs) * valid
  return TokenScores(logp=logp * valid, entropy=None if entropy is None else entropy * valid,
                     values=values)


def token_values(model: CausalLM, variables: Variables, value_head_params: Any, input_ids: jnp.ndarray,
                 attention_mask: jnp.ndarray, *, value_head: ValueHead | None = None,
                 rngs: dict[str, jax.Array] | None = None) -> jnp.ndarray:
  """`[B, T]` values of a critic with its own trunk (`variables`: `params` and optional
  `lora`) and head, aligned like `score_tokens`'s; no LM head is computed."""
  hidden, _ = model.apply(trunk_variables(variables, True), input_ids, attention_mask,
                          method=CausalLM.hidden_states, rngs=rngs)
  head = value_head if value_head is not None else ValueHead()
  values = head.apply({"params": value_head_params}, predecessor_states(hidden), rngs=rngs)
  return values * predicted_mask(attention_mask)


# --- Initialisation ---------------------------------------------------------------------------

def _dummy_inputs() -> tuple[jnp.ndarray, jnp.ndarray]:
  return jnp.zeros((1, 1), jnp.int32), jnp.ones((1, 1), jnp.int32)


def abstract_variables(config: ModelConfig, lora: LoraConfig | None = None) -> dict[str, Any]:
  """Shapes, dtypes and logical axis boxes of `CausalLM` variables, with nothing allocated."""
  model = CausalLM(config, lora)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), *_dummy_inputs()))


def init_base_params(config: ModelConfig, rng: jax.Array) -> Any:
  """Randomly initialised base parameters (normal(initializer_range) kernels, unit norms)."""
  model = CausalLM(config)
  return nn.unbox(jax.jit(lambda r: model.init(r, *_dummy_inputs())["params"])(rng))


def init_lora_params(config: ModelConfig, lora: LoraConfig, rng: jax.Array) -> Any:
  """Fresh adapters (B = 0). Only the `lora` collection is returned, so XLA drops the base init."""
  model = CausalLM(config, lora)
  return nn.unbox(jax.jit(lambda r: model.init(r, *_dummy_inputs())[LORA_COLLECTION])(rng))


def init_value_head_params(config: ModelConfig) -> Any:
  dummy = jnp.zeros((1, config.hidden_size), jnp.float32)
  return nn.unbox(ValueHead().init(jax.random.key(0), dummy)["params"])


# --- The Policy object -------------------------------------------------------------------------

@flax.struct.dataclass
class Policy:
  """A model config with its variables (`params`, optional `lora`, optional `value_head`).

  A pytree: it can be passed through `jax.jit`; `config` and `lora` are static.
  """
  config: ModelConfig = flax.struct.field(pytree_node=False)
  variables: dict[str, Any]
  lora: LoraConfig | None = flax.struct.field(pytree_node=False, default=None)

  @property
  def model(self) -> CausalLM:
    return CausalLM(self.config, self.lora)

  def logits(self, input_ids: jnp.ndarray, attention_mask: jnp.ndarray | None = None, *,
             use_lora: bool = True) -> jnp.ndarray:
    """`[B, T, V]` float32 logits; `logits[:, t]` predicts token `t + 1`."""
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    return _logits(self, jnp.asarray(input_ids), jnp.asarray(attention_mask), use_lora)

  def token_logprobs(self, input_ids: jnp.ndarray, attention_mask: jnp.ndarray | None = None, *,
                     use_lora: bool = True) -> jnp.ndarray:
    """`[B, T]` log-probs of the given tokens, aligned with `input_ids` (0 where undefined)."""
    return self.score(input_ids, attention_mask, use_lora=use_lora).logp

  def score(self, input_ids: jnp.ndarray, attention_mask: jnp.ndarray | None = None, *,
            use_lora: bool = True, with_entropy: bool = False) -> TokenScores:
    """Log-probs, entropies (optional) and values (when there is a value head)."""
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    return _score(self, jnp.asarray(input_ids), jnp.asarray(attention_mask), use_lora, with_entropy)

  def merged(self) -> Policy:
    """The same function with the adapters folded into the base weights (for export)."""
    if self.lora is None or self.variables.get(LORA_COLLECTION) is None:
      return self
    params = merge_lora(self.variables["params"], self.variables[LORA_COLLECTION], self.lora)
    variables = {k: v for k, v in self.variables.items() if k != LORA_COLLECTION}
    variables["params"] = params
    return Policy(config=self.config, variables=variables, lora=None)


def init_policy(config: ModelConfig, rng: jax.Array, lora: LoraConfig | None = None,
                with_value_head: bool = True) -> Policy:
  """A randomly initialised policy (tiny models, tests, the CPU default)."""
  base_rng, lora_rng = jax.random.split(rng)
  variables: dict[str, Any] = {"params": init_base_params(config, base_rng)}
  if lora is not None:
    variables[LORA_COLLECTION] = init_lora_params(config, lora, lora_rng)
  if with_value_head:
    variables["value_head"] = init_value_head_params(config)
  return Policy(config=config, variables=variables, lora=lora)


@functools.partial(jax.jit, static_argnums=(3,))
def _logits(policy: Policy, input_ids: jnp.ndarray, attention_mask: jnp.ndarray,
            use_lora: bool) -> jnp.ndarray:
  return policy.model.apply(trunk_variables(policy.variables, use_lora), input_ids, attention_mask)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _score(policy: Policy, input_ids: jnp.ndarray, attention_mask: jnp.ndarray, use_lora: bool,
           with_entropy: bool) -> TokenScores:
  return score_tokens(policy.model, policy.variables, input_ids, attention_mask, use_lora=use_lora,
                      with_entropy=with_entropy, with_values="value_head" in policy.variables)
