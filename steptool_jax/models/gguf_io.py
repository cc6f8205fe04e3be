"""GGUF import: a llama.cpp model file as our `ModelConfig`, our params and a `transformers` tokenizer.

GGUF is how many users keep local models (llama.cpp, Ollama, LM Studio): one file holding
the architecture as metadata, the tensors (often quantized) and the tokenizer. What is read:

- the config from the metadata (`general.architecture` `llama` or `qwen2`; layer count,
  widths, heads, KV heads, head dim, RoPE base and scaling, RMS-norm epsilon, context length;
  BOS/EOS/pad ids from the tokenizer keys; tied embeddings when there is no `output.weight`);
- every tensor, dequantized by the `gguf` package (every type it can dequantize: F32, F16,
  BF16, Q4_0/1, Q5_0/1, Q8_0, the K-quants, the IQ and TQ types, MXFP4) into float32 and then
  cast to the configured dtype, tensor by tensor and only the rows a device holds, straight
  into the mesh shardings through the same `hf_io.load_params` as the safetensors import;
- the tokenizer and chat template, through `transformers`' own GGUF tokenizer conversion.

llama.cpp's conversion interleaves the rotary halves of each head of the Llama Q and K
projections (rows `[h, half, j]` of the HF layout are stored as `[h, j, half]`, for llama.cpp's
"normal" RoPE); `rope_row_order` undoes it. Qwen2 files are stored unpermuted (NeoX RoPE, the
HF layout). llama.cpp keeps Llama 3's RoPE scaling not as metadata but as a `rope_freqs.weight`
tensor of per-frequency divisors; `llama3_scaling_from_factors` recovers the `llama3` parameters
from it and checks they reproduce every divisor.

Opening a file parses its metadata with `gguf.GGUFReader` (for a 49k-token vocabulary that is
most of the load time: the reader builds an array per token); the last two readers are kept.
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
import os
import pathlib
from typing import Any, Mapping

import gguf
import numpy as np

from steptool_jax.data.errors import DataError
from steptool_jax.models import hf_io
from steptool_jax.models.config import ModelConfig, RopeScaling
from steptool_jax.models.rope import inverse_frequencies

SUFFIX = ".gguf"
ARCHITECTURES = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2}
ROPE_FREQS = "rope_freqs.weight"  # llama.cpp's Llama 3 RoPE scaling, as per-frequency divisors
_MISSING = object()


# --- Finding and opening the file ---------------------------------------------------------------

def gguf_file_of(path: str | os.PathLike[str]) -> pathlib.Path | None:
  """The GGUF file `path` names, or None when `path` is a Hugging Face directory.

  `path` is a `.gguf` file, or a directory without `config.json` that holds exactly one.
  """
  root = pathlib.Path(os.path.expanduser(os.fspath(path)))
  if root.suffix.lower() == SUFFIX and not root.is_dir():
    if not root.is_file():
      raise DataError(root, None, "file", "no such GGUF file")
    return root
  if not root.is_dir() or (root / "config.json").is_file():
    return None
  found = sorted(p for p in root.iterdir() if p.suffix.lower() == SUFFIX and p.is_file())
  if not found:
    return None
  if len(found) > 1:
    raise DataError(root, None, "*.gguf", f"expected exactly one GGUF file in the directory, found {len(found)}: "
                    f"{[p.name for p in found]}; pass the file itself")
  return found[0]


def is_gguf(path: str | os.PathLike[str]) -> bool:
  """Whether `path` is a GGUF model (a `.gguf` file or a directory holding one, no `config.json`)."""
  return gguf_file_of(path) is not None


@functools.lru_cache(maxsize=2)
def _cached_reader(path: str, mtime_ns: int, size: int) -> gguf.GGUFReader:
  del mtime_ns, size  # part of the key only: a rewritten file is read again
  return gguf.GGUFReader(path)


def open_gguf(file: str | os.PathLike[str]) -> gguf.GGUFReader:
  """The file's `GGUFReader` (memory-mapped; the last two opened are kept)."""
  file = pathlib.Path(file)
  try:
    stat = file.stat()
    return _cached_reader(str(file.resolve()), stat.st_mtime_ns, stat.st_size)
  except OSError as e:
    raise DataError(file, None, "file", f"cannot read the file: {e}") from e
  except (ValueError, KeyError, IndexError) as e:
    # The reader fails on a bad magic, an unknown version, or a tensor type it has no name
    # for (a ggml type newer than this gguf package).
    raise DataError(file, None, "header", f"not a GGUF file gguf {_gguf_version()} can read: {e}") from e


def _gguf_version() -> str:
  try:
    return importlib.metadata.version("gguf")
  except importlib.metadata.PackageNotFoundError:  # pragma: no cover (gguf is a dependency)
    return "?"


def metadata_value(reader: gguf.GGUFReader, file: pathlib.Path, key: str, default: Any = _MISSING) -> Any:
  """A metadata value (scalars as Python numbers, strings as str, arrays as lists)."""
  field = reader.fields.get(key)
  if field is None:
    if default is _MISSING:
      raise DataError(file, None, key, "metadata key missing")
    return default
  value = field.contents()
  return value.item() if isinstance(value, np.generic) else value


# --- Config -------------------------------------------------------------------------------------

def architecture(reader: gguf.GGUFReader, file: pathlib.Path) -> str:
  arch = metadata_value(reader, file, gguf.Keys.General.ARCHITECTURE)
  if arch not in ARCHITECTURES:
    raise DataError(file, None, gguf.Keys.General.ARCHITECTURE,
                    f"expected one of {sorted(ARCHITECTURES)} (the Llama-family decoders this project runs), "
                    f"found {arch!r}")
  return arch


def _scalar(reader: gguf.GGUFReader, file: pathlib.Path, key: str, default: Any = _MISSING) -> Any:
  value = metadata_value(reader, file, key, default)
  if isinstance(value, list):  # per-layer values (a few architectures vary heads or widths by layer)
    if len(set(value)) != 1:
      raise DataError(file, None, key, f"expected one value for every layer, found per-layer values {value[:8]}")
    value = value[0]
  return value


def model_config(reader: gguf.GGUFReader, file: str | os.PathLike[str], **overrides: Any) -> ModelConfig:
  """Our config from the file's metadata (and its tensor list: tied embeddings, vocabulary size)."""
  file = pathlib.Path(file)
  arch = architecture(reader, file)
  key = lambda template: template.format(arch=arch)
  get = lambda template, default=_MISSING: _scalar(reader, file, key(template), default)
  tensors = {t.name: t for t in reader.tensors}
  if int(get(gguf.Keys.LLM.EXPERT_COUNT, 0)) > 0:
    raise DataError(file, None, key(gguf.Keys.LLM.EXPERT_COUNT), "mixture-of-experts models are not supported")
  if "token_embd.weight" not in tensors:
    raise DataError(file, None, "token_embd.weight", "tensor missing from the file")
  hidden = int(get(gguf.Keys.LLM.EMBEDDING_LENGTH))
  heads = int(get(gguf.Keys.Attention.HEAD_COUNT))
  head_dim = int(get(gguf.Keys.Attention.KEY_LENGTH, hidden // heads))
  value_dim = int(get(gguf.Keys.Attention.VALUE_LENGTH, head_dim))
  if value_dim != head_dim:
    raise DataError(file, None, key(gguf.Keys.Attention.VALUE_LENGTH),
                    f"expected the value head dim to equal the key head dim {head_dim}, found {value_dim}")
  rotary_dim = int(get(gguf.Keys.Rope.DIMENSION_COUNT, head_dim))
  if rotary_dim != head_dim:
    raise DataError(file, None, key(gguf.Keys.Rope.DIMENSION_COUNT),
                    f"partial rotary embeddings are not supported: expected {head_dim} (the head dim), "
                    f"found {rotary_dim}")
  rope_theta = float(get(gguf.Keys.Rope.FREQ_BASE, 10000.0))
  rope_scaling = _rope_scaling(reader, file, arch, head_dim, rope_theta, tensors)
  token = lambda template: metadata_value(reader, file, template, None)
  eos_ids = tuple(dict.fromkeys(int(i) for i in (token(gguf.Keys.Tokenizer.EOS_ID), token(gguf.Keys.Tokenizer.EOT_ID),
                                                 token(gguf.Keys.Tokenizer.EOM_ID)) if i is not None))
  if arch == "llama" and any(name.endswith("attn_q.bias") for name in tensors):
    raise DataError(file, None, "blk.0.attn_q.bias", "Llama models with biased attention are not supported")
  fields: dict[str, Any] = dict(
      vocab_size=int(tensors["token_embd.weight"].shape[1]),  # GGUF shapes list the fastest axis first
      hidden_size=hidden,
      intermediate_size=int(get(gguf.Keys.LLM.FEED_FORWARD_LENGTH)),
      num_layers=int(get(gguf.Keys.LLM.BLOCK_COUNT)),
      num_heads=heads,
      num_kv_heads=int(get(gguf.Keys.Attention.HEAD_COUNT_KV, heads)),
      head_dim=head_dim,
      # A missing epsilon would silently change every norm: required, not defaulted.
      rms_norm_eps=float(get(gguf.Keys.Attention.LAYERNORM_RMS_EPS)),
      rope_theta=rope_theta,
      rope_scaling=rope_scaling,
      max_position_embeddings=int(get(gguf.Keys.LLM.CONTEXT_LENGTH, 4096)),
      attention_bias=arch == "qwen2",
      tie_word_embeddings="output.weight" not in tensors,
      model_type=arch,
      bos_token_id=token(gguf.Keys.Tokenizer.BOS_ID),
      eos_token_ids=eos_ids,
      pad_token_id=token(gguf.Keys.Tokenizer.PAD_ID),
  )
  fields.update(overrides)
  try:
    return ModelConfig(**fields)
  except ValueError as e:
    raise DataError(file, None, "metadata", str(e)) from e


def _rope_scaling(reader: gguf.GGUFReader, file: pathlib.Path, arch: str, head_dim: int, theta: float,
                  tensors: Mapping[str, Any]) -> RopeScaling | None:
  type_key = gguf.Keys.Rope.SCALING_TYPE.format(arch=arch)
  kind = str(metadata_value(reader, file, type_key, "none"))
  scaling = None
  if kind == "linear":
    factor_key = gguf.Keys.Rope.SCALING_FACTOR.format(arch=arch)
    scaling = RopeScaling("linear", float(metadata_value(reader, file, factor_key)))
  elif kind != "none":
    raise DataError(file, None, type_key, f"expected none or linear RoPE scaling, found {kind!r}")
  if ROPE_FREQS in tensors:
    if scaling is not None:
      raise DataError(file, None, ROPE_FREQS,
                      "expected either linear RoPE scaling or per-frequency factors, found both")
    factors = _dequantized(tensors[ROPE_FREQS], file)
    scaling = llama3_scaling_from_factors(factors, head_dim, theta, file)
  return scaling


def base_inverse_frequencies(head_dim: int, theta: float) -> np.ndarray:
  return 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))


def llama3_scaling_from_factors(factors: np.ndarray, head_dim: int, theta: float,
                                file: str | os.PathLike[str] = "") -> RopeScaling | None:
  """The `llama3` RoPE scaling whose per-frequency divisors are `factors` (None when all are 1).

  Llama 3 keeps high frequencies (divisor 1), divides low ones by `factor`, and in between
  blends so that `1 / divisor = (1 - s) / factor + s` with `s` linear in `1 / wavelength`:
  `s = old_len / ((high - low) * wavelength) - low / (high - low)`. Only the ratios
  `old_len / low` and `old_len / high` are determined, so `low_freq_factor` is set to 1; the
  inverse frequencies come out the same. Fitted from the band, then checked on every frequency.
  """
  factors = np.asarray(factors, np.float64).reshape(-1)
  where = (file, None, ROPE_FREQS)
  if factors.shape != (head_dim // 2,):
    raise DataError(*where, f"expected {head_dim // 2} factors (head_dim / 2), found {factors.size}")
  if np.allclose(factors, 1.0, rtol=0, atol=1e-6):
    return None
  factor = float(factors.max())
  wavelength = 2 * math.pi / base_inverse_frequencies(head_dim, theta)
  band = (factors > 1 + 1e-4) & (factors < factor * (1 - 1e-4))
  not_llama3 = "expected the per-frequency factors of a llama3 RoPE scaling"
  if band.sum() < 2:
    raise DataError(*where, f"{not_llama3} (with at least two blended frequencies to fit), found {factors.tolist()}")
  smooth = (1 / factors[band] - 1 / factor) / (1 - 1 / factor)
  slope, intercept = np.polyfit(1 / wavelength[band], smooth, 1)
  if intercept >= 0 or slope <= 0:
    raise DataError(*where, f"{not_llama3}, found {factors.tolist()}")
  scaling = RopeScaling("llama3", factor, low_freq_factor=1.0, high_freq_factor=float(1 - 1 / intercept),
                        original_max_position_embeddings=int(round(-slope / intercept)))
  probe = ModelConfig(vocab_size=1, hidden_size=head_dim, intermediate_size=1, num_layers=1, num_heads=1,
                      num_kv_heads=1, head_dim=head_dim, rope_theta=theta, rope_scaling=scaling)
  expected = base_inverse_frequencies(head_dim, theta) / factors
  if not np.allclose(inverse_frequencies(probe), expected, rtol=1e-4, atol=0):
    raise DataError(*where, f"{not_llama3}, found {factors.tolist()} (the best llama3 fit, {scaling}, differs)")
  return scaling


# --- Tensors ------------------------------------------------------------------------------------

@functools.cache
def dequantizable(qtype: gguf.GGMLQuantizationType) -> bool:
  """Whether the installed `gguf` can dequantize `qtype` (probed on one zero block)."""
  block_bytes = gguf.GGML_QUANT_SIZES[qtype][1]
  try:
    gguf.quants.dequantize(np.zeros((1, block_bytes), np.uint8), qtype)
  except NotImplementedError:
    return False
  return True


def supported_types() -> list[str]:
  return [t.name for t in gguf.GGMLQuantizationType if dequantizable(t)]


def _check_type(tensor: Any, file: pathlib.Path) -> None:
  if not dequantizable(tensor.tensor_type):
    raise DataError(file, None, tensor.name,
                    f"stored as {tensor.tensor_type.name}, which gguf {_gguf_version()} cannot dequantize; "
                    f"expected one of {', '.join(supported_types())}")


def _dequantized(tensor: Any, file: pathlib.Path, rows: Any = slice(None)) -> np.ndarray:
  """float32 values of `rows` of a tensor (all of a 1-D one), in the HF layout `[rows, columns]`."""
  _check_type(tensor, file)
  data = tensor.data if tensor.data.ndim > 1 else tensor.data[None]
  values = gguf.quants.dequantize(data[rows], tensor.tensor_type)
  shape = tuple(int(n) for n in reversed(tensor.shape))
  return np.asarray(values, np.float32).reshape((-1, *shape[1:]) if len(shape) > 1 else shape)


def rope_row_order(num_heads: int, head_dim: int) -> np.ndarray:
  """For each row of the HF layout of a Llama Q/K projection, the row llama.cpp stored it in.

  HF row `(h, half, j)` (head, rotary half, index in the half) is GGUF row `(h, j, half)`.
  """
  gguf_rows = np.arange(num_heads * head_dim).reshape(num_heads, head_dim // 2, 2)
  return gguf_rows.transpose(0, 2, 1).reshape(-1)


class _GGUFTensor:
  """One GGUF tensor seen in the HF layout; indexing dequantizes only the rows it selects."""

  def __init__(self, tensor: Any, file: pathlib.Path, row_order: np.ndarray | None):
    self._tensor, self._file, self._row_order = tensor, file, row_order
    self._shape = tuple(int(n) for n in reversed(tensor.shape))

  def get_shape(self) -> tuple[int, ...]:
    return self._shape

  def __getitem__(self, index: Any) -> np.ndarray:
    index = index if isinstance(index, tuple) else (index,)
    index = index + (slice(None),) * (len(self._shape) - len(index))
    if len(self._shape) == 1:
      return _dequantized(self._tensor, self._file)[index]
    rows: Any = index[0]
    if self._row_order is not None:
      rows = self._row_order[rows]
    return _dequantized(self._tensor, self._file, rows)[(slice(None),) + tuple(index[1:])]


class GGUFTensors:
  """A `hf_io.TensorSource` over a GGUF file: tensors by their HF names, Q/K rows un-permuted."""

  metadata = "the GGUF metadata"

  def __init__(self, reader: gguf.GGUFReader, file: str | os.PathLike[str], config: ModelConfig):
    self._file = pathlib.Path(file)
    self._config = config
    self._tensors = {t.name: t for t in reader.tensors}
    names = gguf.get_tensor_name_map(ARCHITECTURES[config.model_type], config.num_layers)
    self._names: dict[str, str] = {}
    for tmap in hf_io.tensor_maps(config):
      layers = range(config.num_layers) if tmap.stacked else (0,)
      for layer in layers:
        hf_name = tmap.hf_name.format(layer=layer)
        self._names[hf_name] = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    unknown = sorted(set(self._tensors) - set(self._names.values()) - {ROPE_FREQS})
    if unknown:
      raise DataError(self._file, None, unknown[0], f"tensor this importer does not know for a {config.model_type} "
                      f"model ({len(unknown)} such: {unknown[:4]}); expected only the decoder's tensors")
    for gguf_name in self._names.values():
      if gguf_name in self._tensors:
        _check_type(self._tensors[gguf_name], self._file)

  def where(self, name: str) -> tuple[pathlib.Path, str]:
    return self._file, self._names.get(name, name)

  def get_slice(self, name: str) -> _GGUFTensor:
    gguf_name = self._names[name]
    if gguf_name not in self._tensors:
      raise DataError(self._file, None, gguf_name, "tensor missing from the file")
    row_order = None
    if self._config.model_type == "llama" and (".attn_q." in gguf_name or ".attn_k." in gguf_name):
      heads = self._config.num_heads if ".attn_q." in gguf_name else self._config.num_kv_heads
      row_order = rope_row_order(heads, self._config.head_dim)
    return _GGUFTensor(self._tensors[gguf_name], self._file, row_order)


def load_gguf_params(reader: gguf.GGUFReader, file: str | os.PathLike[str], config: ModelConfig, *,
                     dtype: Any = None, shardings: Any = None) -> Any:
  """Base params of `config` from the file, each placed into its sharding (see `hf_io.load_params`)."""
  return hf_io.load_params(GGUFTensors(reader, file, config), config, dtype=dtype, shardings=shardings)


# --- Tokenizer ----------------------------------------------------------------------------------

def load_gguf_tokenizer(path: str | os.PathLike[str]) -> Any:
  """The file's tokenizer as a `transformers` fast tokenizer, with its special tokens and chat template.

  Built by `transformers`' own GGUF conversion (vocabulary, merges, pre-tokenizer, control
  tokens as special tokens; BOS/EOS/unknown/pad and `add_bos_token` from the metadata).
  """
  file = gguf_file_of(path)
  if file is None:
    raise DataError(path, None, "file", "expected a .gguf file or a directory holding one")
  from transformers import PreTrainedTokenizerFast  # noqa: PLC0415 (slow import, only for real models)

  try:
    return PreTrainedTokenizerFast.from_pretrained(str(file.parent), gguf_file=file.name)
  except (KeyError, ValueError) as e:  # no tokenizer keys, or a tokenizer kind transformers cannot convert
    raise DataError(file, None, gguf.Keys.Tokenizer.LIST, "expected a tokenizer transformers can convert in the "
                    f"file's metadata ({type(e).__name__}: {e})") from e
