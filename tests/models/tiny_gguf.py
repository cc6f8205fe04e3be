"""Tiny GGUF files written with `gguf.GGUFWriter`, from random weights kept in the HF layout.

The writer does what llama.cpp's converter does, written here independently: Llama Q/K rows
are interleaved per head (`llama_cpp_permute`), 2-D weights are stored in the chosen type,
norms and biases in F32. `hf` holds the HF-layout originals, so a test can compare an
import against them (F32) or against `gguf`'s own dequantize of the stored bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import gguf
import numpy as np

T = gguf.GGMLQuantizationType

# Shapes every block size fits: rows of 256 (the K-quants and TQ types use 256-value blocks).
HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS, HEAD_DIM, VOCAB = 256, 512, 2, 4, 2, 64, 96
EPS, THETA = 1e-5, 10000.0


@functools.cache
def quantizable_types() -> list[T]:
  """Every type `gguf` can write (quantize) itself, F32/F16/BF16 included."""
  out = []
  for qtype in T:
    try:
      gguf.quants.quantize(np.zeros((1, 256), np.float32), qtype)
    except NotImplementedError:
      continue
    out.append(qtype)
  return out


def _random_blocks(rng: np.random.Generator, rows: int, cols: int, qtype: T) -> np.ndarray:
  """Valid stored bytes of a type `gguf` cannot quantize: random, with the f16 scales set finite."""
  block, size = gguf.GGML_QUANT_SIZES[qtype]
  raw = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
  scale = lambda n: np.frombuffer(rng.uniform(1e-3, 2e-3, n).astype(np.float16).tobytes(), np.uint8).reshape(-1, 2)
  n = rows * (cols // block)
  flat = raw.reshape(n, size)
  if qtype == T.Q4_K:  # d, dmin (f16), 12 scale bytes, 128 nibble bytes
    flat[:, 0:2], flat[:, 2:4] = scale(n), scale(n)
  elif qtype == T.Q6_K:  # 128 low bytes, 64 high bytes, 16 int8 scales, d (f16)
    flat[:, 208:210] = scale(n)
  # Any other type keeps its random bytes: only for files that must fail before dequantizing.
  return flat.reshape(rows, cols // block * size)


HAND_MADE_TYPES = (T.Q4_K, T.Q6_K)


def llama_cpp_permute(weight: np.ndarray, heads: int) -> np.ndarray:
  """llama.cpp's storage order of a Llama Q/K projection: HF row `(h, half, j)` goes to row `(h, j, half)`."""
  head_dim = weight.shape[0] // heads
  out = np.empty_like(weight)
  for h in range(heads):
    for half in range(2):
      for j in range(head_dim // 2):
        out[h * head_dim + 2 * j + half] = weight[h * head_dim + half * head_dim // 2 + j]
  return out


@dataclasses.dataclass
class TinyGGUF:
  path: pathlib.Path
  arch: str
  qtype: T
  hf: dict[str, np.ndarray]  # HF name -> float32 original (HF layout)
  stored: dict[str, tuple[np.ndarray, T]]  # GGUF name -> (bytes/values as written, type)


def write_tiny_gguf(path: pathlib.Path, *, arch: str = "llama", qtype: T = T.F32, tied: bool = False,
                    seed: int = 0, rope_factors: np.ndarray | None = None, extra_tensor: tuple | None = None,
                    architecture_name: str | None = None, theta: float = THETA) -> TinyGGUF:
  """A 2-layer model (hidden 256, 4 heads / 2 KV heads of 64, vocab 96) stored in `qtype`."""
  rng = np.random.default_rng(seed)
  normal = lambda *shape: rng.normal(0.0, 0.05, shape).astype(np.float32)
  hf: dict[str, np.ndarray] = {"model.embed_tokens.weight": normal(VOCAB, HIDDEN),
                               "model.norm.weight": 1 + normal(HIDDEN) * 4}
  if not tied:
    hf["lm_head.weight"] = normal(VOCAB, HIDDEN)
  for i in range(LAYERS):
    p = f"model.layers.{i}."
    hf[p + "self_attn.q_proj.weight"] = normal(HEADS * HEAD_DIM, HIDDEN)
    hf[p + "self_attn.k_proj.weight"] = normal(KV_HEADS * HEAD_DIM, HIDDEN)
    hf[p + "self_attn.v_proj.weight"] = normal(KV_HEADS * HEAD_DIM, HIDDEN)
    hf[p + "self_attn.o_proj.weight"] = normal(HIDDEN, HEADS * HEAD_DIM)
    hf[p + "mlp.gate_proj.weight"] = normal(INTERMEDIATE, HIDDEN)
    hf[p + "mlp.up_proj.weight"] = normal(INTERMEDIATE, HIDDEN)
    hf[p + "mlp.down_proj.weight"] = normal(HIDDEN, INTERMEDIATE)
    hf[p + "input_layernorm.weight"] = 1 + normal(HIDDEN) * 4
    hf[p + "post_attention_layernorm.weight"] = 1 + normal(HIDDEN) * 4
    if arch == "qwen2":
      for proj, width in (("q_proj", HEADS), ("k_proj", KV_HEADS), ("v_proj", KV_HEADS)):
        hf[p + f"self_attn.{proj}.bias"] = normal(width * HEAD_DIM) * 4

  name_arch = architecture_name or arch
  names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2 if arch == "qwen2" else gguf.MODEL_ARCH.LLAMA, LAYERS)
  writer = gguf.GGUFWriter(path, name_arch)
  writer.add_block_count(LAYERS)
  writer.add_context_length(512)
  writer.add_embedding_length(HIDDEN)
  writer.add_feed_forward_length(INTERMEDIATE)
  writer.add_head_count(HEADS)
  writer.add_head_count_kv(KV_HEADS)
  writer.add_rope_dimension_count(HEAD_DIM)
  writer.add_rope_freq_base(theta)
  writer.add_layer_norm_rms_eps(EPS)
  writer.add_vocab_size(VOCAB)
  writer.add_bos_token_id(1)
  writer.add_eos_token_id(2)
  writer.add_pad_token_id(0)
  stored: dict[str, tuple[np.ndarray, T]] = {}
  for hf_name, weight in hf.items():
    gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if arch == "llama" and (".q_proj." in hf_name or ".k_proj." in hf_name):
      weight = llama_cpp_permute(weight, HEADS if ".q_proj." in hf_name else KV_HEADS)
    if weight.ndim == 1 or qtype == T.F32:
      data, kind = weight, T.F32
    elif qtype in HAND_MADE_TYPES or qtype not in quantizable_types():
      data, kind = _random_blocks(rng, *weight.shape, qtype), qtype
    else:
      data, kind = gguf.quants.quantize(weight, qtype), qtype
    writer.add_tensor(gguf_name, data, raw_dtype=kind if kind not in (T.F32, T.F16) else None)
    stored[gguf_name] = (data, kind)
  if rope_factors is not None:
    writer.add_tensor("rope_freqs.weight", np.asarray(rope_factors, np.float32))
  if extra_tensor is not None:
    name, data, kind = extra_tensor
    writer.add_tensor(name, data, raw_dtype=kind)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return TinyGGUF(path, arch, qtype, hf, stored)
