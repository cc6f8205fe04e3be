"""The Llama-family decoder (Llama 2, Llama 3.x, Qwen2) as a Flax linen module.

`CausalLM` is pure-functional: `variables = model.init(...)`, then `model.apply(variables, ...)`.
Layers are stacked with `nn.scan` (one compiled layer body, parameters with a leading
`layers` axis) and optionally rematerialised per layer. Every parameter and the main
activations carry logical axis names; `steptool_jax.parallel.rules` maps them to the mesh.

Variables: `params` (the base model) and, when a `LoraConfig` is given, `lora` (adapters,
see `lora.py`). Decoding uses an explicit `KVCache` passed in and returned, so the whole
generation loop stays a pure function that `jax.jit` compiles once.
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from steptool_jax.models.config import LoraConfig, ModelConfig
from steptool_jax.models.lora import LORA_COLLECTION, Projection
from steptool_jax.models.rope import apply_rope, inverse_frequencies

constrain = nn.with_logical_constraint

HIDDEN_AXES = ("batch", "length", "embed")
CACHE_AXES = ("layers", "batch", "cache_length", "kv_heads", "head_dim")


@flax.struct.dataclass
class KVCache:
  """Keys and values of every layer for `S` slots, and which slots hold real tokens.

  `k`, `v`: `[layers, B, S, kv_heads, head_dim]`; `mask`: `[B, S]` (1 = a real token was
  written there); `index`: the next slot to write (all rows advance together, which is why
  prompts are left-padded). A padding input token leaves the slot it lands on as it was
  (key, value and mask), so a block of new tokens can be written over slots that already
  hold a row's earlier tokens, as long as that row's new tokens come after them
  (`generate.extend_and_generate`: an episode's cache kept across turns).
  """
  k: jnp.ndarray
  v: jnp.ndarray
  mask: jnp.ndarray
  index: jnp.ndarray


def init_cache(config: ModelConfig, batch_size: int, length: int) -> KVCache:
  """An empty cache of `length` slots in the compute dtype."""
  shape = (config.num_layers, batch_size, length, config.num_kv_heads, config.head_dim)
  return KVCache(k=jnp.zeros(shape, config.jnp_dtype), v=jnp.zeros(shape, config.jnp_dtype),
                 mask=jnp.zeros((batch_size, length), jnp.int32), index=jnp.zeros((), jnp.int32))


def positions_from_mask(attention_mask: jnp.ndarray, offset: jnp.ndarray | int = 0) -> jnp.ndarray:
  """Position ids that count only real tokens: left or right padding give the same positions.

  `offset` (`[B, 1]` or scalar) is the number of real tokens already in the cache.
  """
  return jnp.maximum(offset + jnp.cumsum(attention_mask, axis=-1) - 1, 0).astype(jnp.int32)


class RMSNorm(nn.Module):
  """Root-mean-square norm, computed in float32 and cast back, with a learned scale."""
  eps: float
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                       (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return scale.astype(self.dtype) * normed.astype(self.dtype)


def _projection(config: ModelConfig, lora: LoraConfig | None, name: str, deterministic: bool,
                **kwargs: Any) -> Projection:
  return Projection(
      name=name, lora=lora if lora is not None and name in lora.targets else None,
      dtype=config.jnp_dtype, param_dtype=config.jnp_param_dtype,
      kernel_init=nn.initializers.normal(config.initializer_range),
      deterministic=deterministic, **kwargs)


class Attention(nn.Module):
  """Grouped-query self-attention with RoPE, padding-aware causal masking and an optional cache."""
  config: ModelConfig
  lora: LoraConfig | None = None
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray, positions: jnp.ndarray, kv_mask: jnp.ndarray, input_mask: jnp.ndarray,
               cache: tuple[jnp.ndarray, jnp.ndarray] | None, cache_index: jnp.ndarray | None,
               layer_index: jnp.ndarray) -> tuple[jnp.ndarray, tuple[jnp.ndarray, jnp.ndarray] | None]:
    cfg = self.config
    e, h, kv, d = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    proj = lambda name, **kw: _projection(cfg, self.lora, name, self.deterministic, **kw)
    q = proj("q_proj", in_features=(e,), out_features=(h, d), in_axes=("embed",),
             out_axes=("heads", "head_dim"), use_bias=cfg.attention_bias)(x)
    k = proj("k_proj", in_features=(e,), out_features=(kv, d), in_axes=("embed",),
             out_axes=("kv_heads", "head_dim"), use_bias=cfg.attention_bias)(x)
    v = proj("v_proj", in_features=(e,), out_features=(kv, d), in_axes=("embed",),
             out_axes=("kv_heads", "head_dim"), use_bias=cfg.attention_bias)(x)
    inv_freq = inverse_frequencies(cfg)
    q = constrain(apply_rope(q, positions, inv_freq), ("batch", "length", "heads", "head_dim"))
    k = constrain(apply_rope(k, positions, inv_freq), ("batch", "length", "kv_heads", "head_dim"))
    v = constrain(v, ("batch", "length", "kv_heads", "head_dim"))

    if cache is None:
      keys, values, offset = k, v, 0
    else:
      # Write only the new tokens into this layer's slots: the cache is a loop carry, so this
      # update happens in place instead of copying every layer's cache each step.
      cache_k, cache_v = cache
      start = (layer_index, 0, cache_index, 0, 0)
      real = (input_mask > 0)[None, :, :, None, None]

      def write(cache_x: jnp.ndarray, new: jnp.ndarray) -> jnp.ndarray:
        new = new.astype(cache_x.dtype)[None]
        new = jnp.where(real, new, jax.lax.dynamic_slice(cache_x, start, new.shape))  # padding keeps the slot
        return jax.lax.dynamic_update_slice(cache_x, new, start)

      cache_k, cache_v = write(cache_k, k), write(cache_v, v)
      cache = (constrain(cache_k, CACHE_AXES), constrain(cache_v, CACHE_AXES))
      keys, values, offset = cache_k[layer_index], cache_v[layer_index], cache_index

    if cfg.attention_impl == "cudnn" and cache is None:
      # cuDNN's fused kernel takes lengths, not a mask: valid for right-padded batches only.
      lengths = jnp.sum(kv_mask, axis=-1).astype(jnp.int32)
      out = jax.nn.dot_product_attention(q, keys, values, is_causal=True,
                                         key_value_seq_lengths=lengths, implementation="cudnn")
    else:
      q_index = offset + jnp.arange(q.shape[1])
      k_index = jnp.arange(keys.shape[1])
      causal = k_index[None, :] <= q_index[:, None]
      mask = causal[None, None] & (kv_mask[:, None, None, :] > 0)  # [B, 1, T, S]
      out = jax.nn.dot_product_attention(q, keys, values, mask=mask, implementation="xla")
    out = constrain(out, ("batch", "length", "heads", "head_dim"))
    y = proj("o_proj", in_features=(h, d), out_features=(e,), in_axes=("heads", "head_dim"),
             out_axes=("embed",))(out)
    return y, cache


class MLP(nn.Module):
  """SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`."""
  config: ModelConfig
  lora: LoraConfig | None = None
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    cfg = self.config
    e, f = cfg.hidden_size, cfg.intermediate_size
    proj = lambda name, **kw: _projection(cfg, self.lora, name, self.deterministic, **kw)
    gate = proj("gate_proj", in_features=(e,), out_features=(f,), in_axes=("embed",), out_axes=("mlp",))(x)
    up = proj("up_proj", in_features=(e,), out_features=(f,), in_axes=("embed",), out_axes=("mlp",))(x)
    hidden = constrain(nn.silu(gate) * up, ("batch", "length", "mlp"))
    return proj("down_proj", in_features=(f,), out_features=(e,), in_axes=("mlp",), out_axes=("embed",))(hidden)


class DecoderLayer(nn.Module):
  """Pre-norm block: `x + attn(norm(x))`, then `x + mlp(norm(x))`. Scanned over layers."""
  config: ModelConfig
  lora: LoraConfig | None = None
  deterministic: bool = True

  @nn.compact
  def __call__(self, carry: tuple[Any, ...], layer_index: jnp.ndarray, positions: jnp.ndarray,
               kv_mask: jnp.ndarray, input_mask: jnp.ndarray,
               cache_index: jnp.ndarray | None) -> tuple[tuple[Any, ...], None]:
    cfg = self.config
    x, cache = carry
    norm = lambda name: RMSNorm(cfg.rms_norm_eps, cfg.jnp_dtype, cfg.jnp_param_dtype, name=name)
    attn_out, cache = Attention(cfg, self.lora, self.deterministic, name="self_attn")(
        norm("input_norm")(x), positions, kv_mask, input_mask, cache, cache_index, layer_index)
    x = constrain(x + attn_out, HIDDEN_AXES)
    mlp_out = MLP(cfg, self.lora, self.deterministic, name="mlp")(norm("post_attention_norm")(x))
    x = constrain(x + mlp_out, HIDDEN_AXES)
    return (x, cache), None


_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class CausalLM(nn.Module):
  """Token embedding, `num_layers` decoder layers, final norm, and the language-model head.

  Methods: `hidden_states` (the trunk, with or without a cache), `logits` (the head on
  given hidden states, float32), and `__call__` = both (used for `init`).
  """
  config: ModelConfig
  lora: LoraConfig | None = None
  deterministic: bool = True

  def setup(self):
    cfg = self.config
    self.embed = nn.Embed(
        cfg.vocab_size, cfg.hidden_size, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype,
        embedding_init=nn.with_logical_partitioning(
            nn.initializers.normal(cfg.initializer_range), ("vocab", "embed")))
    layer = DecoderLayer
    if cfg.remat != "none":
      layer = nn.remat(DecoderLayer, prevent_cse=False, policy=_REMAT_POLICIES[cfg.remat])
    self.layers = nn.scan(
        layer,
        variable_axes={"params": 0, LORA_COLLECTION: 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
        length=cfg.num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )(cfg, self.lora, self.deterministic)
    self.final_norm = RMSNorm(cfg.rms_norm_eps, cfg.jnp_dtype, cfg.jnp_param_dtype)
    if not cfg.tie_word_embeddings:
      self.lm_head = self.param(
          "lm_head", nn.with_logical_partitioning(
              nn.initializers.normal(cfg.initializer_range), ("embed", "vocab")),
          (cfg.hidden_size, cfg.vocab_size), cfg.jnp_param_dtype)

  def hidden_states(self, input_ids: jnp.ndarray, attention_mask: jnp.ndarray,
                    positions: jnp.ndarray | None = None,
                    cache: KVCache | None = None) -> tuple[jnp.ndarray, KVCache | None]:
    """Final-norm hidden states `[B, T, embed]` (and the updated cache when one is given).

    `attention_mask [B, T]` marks real tokens (left or right padding). Position ids default
    to counting real tokens, continuing from those already in the cache.
    """
    attention_mask = attention_mask.astype(jnp.int32)
    if cache is None:
      kv_mask, cache_index, layer_cache = attention_mask, None, None
      offset: Any = 0
    else:
      block = jax.lax.dynamic_slice(cache.mask, (0, cache.index), attention_mask.shape)
      kv_mask = jax.lax.dynamic_update_slice(cache.mask, jnp.maximum(block, attention_mask), (0, cache.index))
      cache_index, layer_cache = cache.index, (cache.k, cache.v)
      offset = jnp.sum(cache.mask, axis=-1, keepdims=True)
    if positions is None:
      positions = positions_from_mask(attention_mask, offset)
    x = constrain(self.embed(input_ids), HIDDEN_AXES)
    layer_indices = jnp.arange(self.config.num_layers)
    (x, layer_cache), _ = self.layers((x, layer_cache), layer_indices, positions, kv_mask, attention_mask,
                                      cache_index)
    x = constrain(self.final_norm(x), HIDDEN_AXES)
    if cache is not None:
      assert layer_cache is not None
      cache = KVCache(k=layer_cache[0], v=layer_cache[1], mask=kv_mask,
                      index=cache.index + input_ids.shape[1])
    return x, cache

  def lm_head_kernel(self) -> jnp.ndarray:
    """`[embed, vocab]`: the output projection (the embedding table, transposed, when tied)."""
    if self.config.tie_word_embeddings:
      return self.embed.embedding.T
    return self.lm_head

  def logits(self, hidden: jnp.ndarray) -> jnp.ndarray:
    """Float32 logits `[..., vocab]` of hidden states (matmul in the compute dtype)."""
    dtype = self.config.jnp_dtype
    kernel = self.lm_head_kernel().astype(dtype)
    logits = jnp.einsum("...e,ev->...v", hidden.astype(dtype), kernel,
                        preferred_element_type=jnp.float32)
    if logits.ndim == 3:
      logits = constrain(logits, ("batch", "length", "vocab"))
    return logits

  def __call__(self, input_ids: jnp.ndarray, attention_mask: jnp.ndarray) -> jnp.ndarray:
    hidden, _ = self.hidden_states(input_ids, attention_mask)
    return self.logits(hidden)
