"""Hugging Face checkpoint import and export (config.json + safetensors, single or sharded).

Import reads every tensor straight into its target sharding: `jax.make_array_from_callback`
asks, per device, for the block of the global array that device holds, and the block is
read from the safetensors file with `safe_open(...).get_slice` (only those bytes). No host
ever holds a full copy of the model, let alone one per device. `load_params` reads from any
`TensorSource` (tensors by HF name, sliceable); `gguf_io` provides one over a GGUF file.

Our kernels keep the head structure (`q_proj`: `[embed, heads, head_dim]`) where HF stores
`[heads * head_dim, embed]`, and layers are stacked on a leading axis. `TensorMap` records,
per tensor, how one becomes the other: ours = `hf.transpose(perm).reshape(our_shape)`.

Export writes `config.json`, `model.safetensors` (or `model-0000i-of-0000n.safetensors` +
`model.safetensors.index.json` past `max_shard_bytes`), the tokenizer files of a source
directory, and our value head as `value_head.safetensors` (ignored by `transformers`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import shutil
from typing import Any, Callable, Iterator, Mapping, Protocol

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from safetensors import safe_open
from safetensors.numpy import save_file

from steptool_jax.data.errors import DataError
from steptool_jax.models.config import ModelConfig
from steptool_jax.models.policy import abstract_variables

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
VALUE_HEAD_FILE = "value_head.safetensors"
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
    "generation_config.json",
)


@dataclasses.dataclass(frozen=True)
class TensorMap:
  """Where one of our parameters lives in an HF checkpoint and how its axes differ.

  `perm` transposes the HF tensor; `groups[j]` says how many of our axes the j-th transposed
  axis splits into (e.g. q_proj: HF `[H*D, E]` -> transpose -> `[E, H*D]` -> our `[E, H, D]`,
  so `perm=(1, 0)`, `groups=(1, 2)`). Stacked tensors have one HF tensor per layer.
  """
  path: tuple[str, ...]
  hf_name: str  # with `{layer}` for stacked tensors
  perm: tuple[int, ...]
  groups: tuple[int, ...]
  stacked: bool = False


def tensor_maps(config: ModelConfig) -> list[TensorMap]:
  """Every base parameter of `config`'s model, in HF checkpoint order."""
  layer = "model.layers.{layer}."
  maps = [TensorMap(("embed", "embedding"), "model.embed_tokens.weight", (0, 1), (1, 1))]
  for ours, theirs in (("input_norm", "input_layernorm"), ("post_attention_norm", "post_attention_layernorm")):
    maps.append(TensorMap(("layers", ours, "scale"), layer + theirs + ".weight", (0,), (1,), True))
  for proj in ("q_proj", "k_proj", "v_proj"):
    maps.append(TensorMap(("layers", "self_attn", proj, "kernel"), layer + f"self_attn.{proj}.weight",
                          (1, 0), (1, 2), True))
    if config.attention_bias:
      maps.append(TensorMap(("layers", "self_attn", proj, "bias"), layer + f"self_attn.{proj}.bias",
                            (0,), (2,), True))
  maps.append(TensorMap(("layers", "self_attn", "o_proj", "kernel"), layer + "self_attn.o_proj.weight",
                        (1, 0), (2, 1), True))
  for proj in ("gate_proj", "up_proj", "down_proj"):
    maps.append(TensorMap(("layers", "mlp", proj, "kernel"), layer + f"mlp.{proj}.weight",
                          (1, 0), (1, 1), True))
  maps.append(TensorMap(("final_norm", "scale"), "model.norm.weight", (0,), (1,)))
  if not config.tie_word_embeddings:
    maps.append(TensorMap(("lm_head",), "lm_head.weight", (1, 0), (1, 1)))
  return maps


def _grouped_shape(our_shape: tuple[int, ...], groups: tuple[int, ...]) -> list[int]:
  """Our per-layer shape with each group of axes merged: the transposed HF shape."""
  out, axis = [], 0
  for g in groups:
    out.append(math.prod(our_shape[axis:axis + g]))
    axis += g
  return out


def hf_shape(our_shape: tuple[int, ...], tmap: TensorMap) -> tuple[int, ...]:
  transposed = _grouped_shape(our_shape, tmap.groups)
  shape = [0] * len(transposed)
  for j, p in enumerate(tmap.perm):
    shape[p] = transposed[j]
  return tuple(shape)


def read_block(tensor: Any, tmap: TensorMap, our_shape: tuple[int, ...],
               index: tuple[slice, ...]) -> np.ndarray:
  """The `index` block of our (per-layer) array, reading only the covering HF rows/columns.

  For a group of our axes that share one HF axis, the HF range spans from the first to the
  last selected entry of the group's leading axis; the inner axes are then cut after the
  reshape (they are rarely sharded: head_dim never is).
  """
  hf_index: list[slice] = [slice(None)] * len(tmap.perm)
  block_shape: list[int] = []
  inner_cut: list[slice] = []
  axis = 0
  for j, g in enumerate(tmap.groups):
    sizes = our_shape[axis:axis + g]
    ranges = [index[axis + k].indices(sizes[k]) for k in range(g)]
    if any(step != 1 for _, _, step in ranges):
      raise ValueError(f"{tmap.hf_name}: strided shard index {index} is not supported")
    inner = math.prod(sizes[1:])
    start, stop, _ = ranges[0]
    hf_index[tmap.perm[j]] = slice(start * inner, stop * inner)
    block_shape += [stop - start, *sizes[1:]]
    inner_cut += [slice(None)] + [slice(a, b) for a, b, _ in ranges[1:]]
    axis += g
  block = np.asarray(tensor[tuple(hf_index)])
  return np.transpose(block, tmap.perm).reshape(block_shape)[tuple(inner_cut)]


# --- Reading ------------------------------------------------------------------------------------

def read_hf_config(path: str | os.PathLike[str]) -> dict[str, Any]:
  config_path = pathlib.Path(path) / "config.json"
  if not config_path.is_file():
    raise DataError(config_path, None, "config.json", "expected a Hugging Face model directory with config.json")
  try:
    return json.loads(config_path.read_text())
  except json.JSONDecodeError as e:
    raise DataError(config_path, e.lineno, "config.json", f"not valid JSON: {e.msg}") from e


def checkpoint_dtype(hf_config: Mapping[str, Any]) -> str:
  """The dtype the checkpoint was saved in (`dtype` in transformers 5, `torch_dtype` before)."""
  name = hf_config.get("dtype") or hf_config.get("torch_dtype") or "float32"
  return str(name).removeprefix("torch.")


def weight_files(path: str | os.PathLike[str]) -> dict[str, pathlib.Path]:
  """Tensor name -> safetensors file, from the index of a sharded checkpoint or the single file."""
  root = pathlib.Path(path)
  index_path = root / INDEX_FILE
  if index_path.is_file():
    try:
      weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
      raise DataError(index_path, None, "weight_map", f"expected a JSON object with a weight_map: {e}") from e
    return {name: root / file for name, file in weight_map.items()}
  single = root / SINGLE_FILE
  if not single.is_file():
    raise DataError(root, None, SINGLE_FILE, f"expected {SINGLE_FILE} or {INDEX_FILE} (only safetensors are read)")
  with safe_open(single, framework="flax") as f:
    return {name: single for name in f.keys()}


class TensorSource(Protocol):
  """Where `load_params` reads tensors from, by their HF names (a safetensors checkpoint, a GGUF file).

  `get_slice(name)` returns an object with `get_shape()` (the HF shape) and numpy indexing
  by a tuple of slices over the HF axes (only the indexed block is read); it raises a
  `DataError` for a tensor the source does not have. `where(name)` is the file and the
  source's own name of that tensor, for error messages; `metadata` names what the expected
  shapes were derived from (`config.json`).
  """

  metadata: str

  def get_slice(self, name: str) -> Any: ...

  def where(self, name: str) -> tuple[pathlib.Path, str]: ...


class _Shards:
  """Lazily opened safetensors files; slices are materialised on the host CPU."""

  metadata = "config.json"

  def __init__(self, stack: contextlib.ExitStack, path: str | os.PathLike[str], files: Mapping[str, pathlib.Path]):
    self._stack, self._path, self._files, self._open = stack, path, files, {}
    self._cpu = jax.local_devices(backend="cpu")[0]

  def where(self, name: str) -> tuple[pathlib.Path, str]:
    return self._files[name], name

  def get_slice(self, name: str) -> Any:
    if name not in self._files:
      raise DataError(self._path, None, name, "tensor missing from the checkpoint")
    file = self._files[name]
    if file not in self._open:
      # framework="flax" reads bfloat16 too (numpy has no bf16); the CPU default device keeps
      # the slices off the accelerator until make_array_from_callback places them.
      with jax.default_device(self._cpu):
        self._open[file] = self._stack.enter_context(safe_open(file, framework="flax"))
    return _HostSlice(self._open[file].get_slice(name), self._cpu)


class _HostSlice:
  def __init__(self, tensor_slice: Any, cpu: jax.Device):
    self._slice, self._cpu = tensor_slice, cpu

  def get_shape(self) -> tuple[int, ...]:
    return tuple(self._slice.get_shape())

  def __getitem__(self, index: Any) -> np.ndarray:
    with jax.default_device(self._cpu):
      return np.asarray(self._slice[index])


def _callback(tensor: Callable[[str], Any], tmap: TensorMap, full_shape: tuple[int, ...], dtype: Any
              ) -> Callable[[tuple[slice, ...]], np.ndarray]:
  layer_shape = full_shape[1:] if tmap.stacked else full_shape
  seen: dict[tuple[tuple[int, int, int], ...], np.ndarray] = {}

  def fetch(index: tuple[slice, ...]) -> np.ndarray:
    index = tuple(index) + (slice(None),) * (len(full_shape) - len(index))
    key = tuple(s.indices(n) for s, n in zip(index, full_shape))
    if key not in seen:  # replicas of a shard on several devices read it once
      if tmap.stacked:
        # Filled layer by layer, so the host holds one layer in the stored dtype (float32 for
        # dequantized GGUF) besides the block in the target dtype.
        layers = range(*index[0].indices(full_shape[0]))
        block = None
        for j, i in enumerate(layers):
          layer = read_block(tensor(tmap.hf_name.format(layer=i)), tmap, layer_shape, index[1:])
          if block is None:
            block = np.empty((len(layers), *layer.shape), dtype)
          block[j] = layer
        seen[key] = block
      else:
        seen[key] = read_block(tensor(tmap.hf_name), tmap, layer_shape, index).astype(dtype)
    return seen[key]

  return fetch


def load_params(source: TensorSource, config: ModelConfig, *, dtype: Any = None, shardings: Any = None) -> Any:
  """Base params of `config` read from `source`, each placed straight into its sharding.

  `shardings` is a tree like the params (e.g. from `parallel.logical_to_shardings`); None
  puts everything on the first device. `dtype` defaults to `config.param_dtype`.
  """
  dtype = jnp.dtype(dtype or config.param_dtype)
  abstract = flax.traverse_util.flatten_dict(flax.linen.unbox(abstract_variables(config)["params"]))
  flat_shardings = (flax.traverse_util.flatten_dict(flax.core.unfreeze(shardings))
                    if shardings is not None else {})
  default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  out: dict[tuple[str, ...], jax.Array] = {}
  for tmap in tensor_maps(config):
    full_shape = tuple(abstract[tmap.path].shape)
    expected = hf_shape(full_shape[1:] if tmap.stacked else full_shape, tmap)
    first = tmap.hf_name.format(layer=0)
    found = source.get_slice(first).get_shape()
    if found != expected:
      file, name = source.where(first)
      raise DataError(file, None, name, f"expected shape {list(expected)} from {source.metadata}, found {list(found)}")
    sharding = flat_shardings.get(tmap.path, default)
    out[tmap.path] = jax.make_array_from_callback(
        full_shape, sharding, _callback(source.get_slice, tmap, full_shape, dtype))
  missing = set(abstract) - set(out)
  if missing:
    raise ValueError(f"no checkpoint mapping for params {sorted(missing)}")
  return flax.traverse_util.unflatten_dict(out)


def load_hf_params(path: str | os.PathLike[str], config: ModelConfig, *, dtype: Any = None,
                   shardings: Any = None) -> Any:
  """Base params of `config` from the safetensors under `path`, placed with `shardings` (see `load_params`)."""
  files = weight_files(path)
  with contextlib.ExitStack() as stack:
    return load_params(_Shards(stack, path, files), config, dtype=dtype, shardings=shardings)


def load_value_head(path: str | os.PathLike[str]) -> dict[str, jax.Array] | None:
  """Our value head, if the directory was written by our export with one."""
  file = pathlib.Path(path) / VALUE_HEAD_FILE
  if not file.is_file():
    return None
  with safe_open(file, framework="flax") as f:
    missing = {"value_head.kernel", "value_head.bias"} - set(f.keys())
    if missing:
      raise DataError(file, None, sorted(missing)[0], "tensor missing from the value head file")
    return {"kernel": jnp.asarray(f.get_tensor("value_head.kernel"), jnp.float32),
            "bias": jnp.asarray(f.get_tensor("value_head.bias"), jnp.float32).reshape(())}


# --- Writing ------------------------------------------------------------------------------------

def _to_host(x: jax.Array) -> np.ndarray:
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def hf_tensors(config: ModelConfig, params: Any, dtype: Any) -> Iterator[tuple[str, np.ndarray]]:
  """(HF name, host array in `dtype`) for every base tensor, one parameter on the host at a time."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  for tmap in tensor_maps(config):
    array = _to_host(flat[tmap.path])
    inverse = tuple(np.argsort(tmap.perm))
    layers = [(tmap.hf_name.format(layer=i), array[i]) for i in range(array.shape[0])] \
        if tmap.stacked else [(tmap.hf_name, array)]
    for name, ours in layers:
      transposed = ours.reshape(_grouped_shape(ours.shape, tmap.groups))
      yield name, np.ascontiguousarray(np.transpose(transposed, inverse).astype(dtype))


def save_hf_checkpoint(output_dir: str | os.PathLike[str], config: ModelConfig, params: Any, *,
                       dtype: Any = "bfloat16", value_head: Mapping[str, Any] | None = None,
                       tokenizer_dir: str | os.PathLike[str] | None = None,
                       max_shard_bytes: int = 5 * 2**30) -> pathlib.Path:
  """Writes an HF directory that `AutoModelForCausalLM.from_pretrained` (and `load_pretrained`) load.

  `params` are base params (merge LoRA first: `Policy.merged()`). Only process 0 writes;
  every process must call this (gathering sharded arrays is collective).
  """
  out = pathlib.Path(output_dir)
  dtype = jnp.dtype(dtype)
  write = jax.process_index() == 0
  if write:
    out.mkdir(parents=True, exist_ok=True)
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  # Plan the shards from shapes alone, so file names can carry the total count.
  sizes: list[tuple[str, int]] = []
  for tmap in tensor_maps(config):
    shape = flat[tmap.path].shape
    per_layer = math.prod(shape[1:] if tmap.stacked else shape) * dtype.itemsize
    names = [tmap.hf_name.format(layer=i) for i in range(shape[0])] if tmap.stacked else [tmap.hf_name]
    sizes += [(name, per_layer) for name in names]
  shard_of: dict[str, int] = {}
  shard, used = 0, 0
  for name, size in sizes:
    if used and used + size > max_shard_bytes:
      shard, used = shard + 1, 0
    shard_of[name], used = shard, used + size
  num_shards = shard + 1
  file_names = [SINGLE_FILE] if num_shards == 1 else [
      f"model-{i + 1:05d}-of-{num_shards:05d}.safetensors" for i in range(num_shards)]

  pending: dict[str, np.ndarray] = {}
  current = 0
  for name, tensor in hf_tensors(config, params, dtype):
    if shard_of[name] != current:
      if write:
        save_file(pending, out / file_names[current], metadata={"format": "pt"})
      pending, current = {}, shard_of[name]
    pending[name] = tensor
  if write:
    save_file(pending, out / file_names[current], metadata={"format": "pt"})
    if num_shards > 1:
      index = {"metadata": {"total_size": sum(size for _, size in sizes)},
               "weight_map": {name: file_names[shard_of[name]] for name, _ in sizes}}
      (out / INDEX_FILE).write_text(json.dumps(index, indent=2))
    (out / "config.json").write_text(json.dumps(config.to_hf_config(torch_dtype=dtype.name), indent=2))
    if value_head is not None:
      save_file({"value_head.kernel": np.asarray(_to_host(value_head["kernel"]), np.float32),
                 "value_head.bias": np.asarray(_to_host(value_head["bias"]), np.float32).reshape(1)},
                out / VALUE_HEAD_FILE, metadata={"format": "steptool_jax"})
    if tokenizer_dir is not None:
      copy_tokenizer_files(tokenizer_dir, out)
  return out


def copy_tokenizer_files(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> list[str]:
  """Copies the tokenizer (and generation config) files present in `source`."""
  copied = []
  for name in TOKENIZER_FILES:
    src = pathlib.Path(source) / name
    if src.is_file() and src.resolve() != (pathlib.Path(destination) / name).resolve():
      shutil.copy2(src, pathlib.Path(destination) / name)
      copied.append(name)
  return copied
