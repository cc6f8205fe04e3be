"""`load_pretrained` / `save_pretrained`: a `Policy` from a Hugging Face directory or a GGUF file,
and to a Hugging Face directory.

Both HF directions use the same format, so a directory written by `save_pretrained` (or the
`python -m steptool_jax.export` CLI) loads back with `load_pretrained` and with
`transformers.AutoModelForCausalLM.from_pretrained`. A GGUF file (or a directory holding one
and no `config.json`) is read by `gguf_io`: config from its metadata, tensors dequantized.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import flax
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from steptool_jax.data.errors import DataError
from steptool_jax.models import gguf_io, hf_io
from steptool_jax.models.config import LoraConfig, ModelConfig
from steptool_jax.models.lora import LORA_COLLECTION
from steptool_jax.models.policy import (
    Policy, abstract_variables, init_lora_params, init_value_head_params)
from steptool_jax.models.value_head import ValueHead
from steptool_jax.parallel.rules import LOGICAL_AXIS_RULES, LogicalRules
from steptool_jax.parallel.sharding import logical_specs, logical_to_shardings


def variable_shardings(config: ModelConfig, lora: LoraConfig | None, mesh: Mesh,
                       rules: LogicalRules = LOGICAL_AXIS_RULES) -> dict[str, Any]:
  """`NamedSharding`s for `{"params", "lora", "value_head"}` from the logical annotations."""
  shardings = dict(flax.core.unfreeze(
      logical_to_shardings(logical_specs(abstract_variables(config, lora)), mesh, rules)))
  head = jax.eval_shape(ValueHead().init, jax.random.key(0), jax.ShapeDtypeStruct((1, config.hidden_size), jnp.float32))
  shardings["value_head"] = logical_to_shardings(logical_specs(head["params"]), mesh, rules)
  return shardings


def read_model_config(path: str | os.PathLike[str], **overrides: Any) -> ModelConfig:
  """The `ModelConfig` of a model directory or GGUF file, without reading any weights.

  Unset dtypes default to the checkpoint's (float32 for GGUF, whose tensors are dequantized
  to float32); `compute_dtype` follows `param_dtype` unless given as `dtype`.
  """
  gguf_file = gguf_io.gguf_file_of(path)
  if gguf_file is not None:
    overrides.setdefault("param_dtype", "float32")
    overrides.setdefault("dtype", overrides["param_dtype"])
    return gguf_io.model_config(gguf_io.open_gguf(gguf_file), gguf_file, **overrides)
  hf_config = hf_io.read_hf_config(path)
  overrides.setdefault("param_dtype", jnp.dtype(hf_io.checkpoint_dtype(hf_config)).name)
  overrides.setdefault("dtype", overrides["param_dtype"])
  try:
    return ModelConfig.from_hf_config(hf_config, **overrides)
  except KeyError as e:
    raise DataError(pathlib.Path(path) / "config.json", None, str(e.args[0]),
                    "required field missing") from e


def load_pretrained(path: str | os.PathLike[str], dtype: Any = None, *, compute_dtype: Any = None,
                    lora: LoraConfig | None = None, mesh: Mesh | None = None,
                    rules: LogicalRules = LOGICAL_AXIS_RULES, rng: jax.Array | None = None,
                    with_value_head: bool = True, **config_overrides: Any) -> Policy:
  """A `Policy` from an HF model directory (or one written by our export), or a GGUF file.

  Args:
    path: directory with `config.json` and `model.safetensors` (or a sharded index); or a
      `.gguf` file, or a directory holding exactly one and no `config.json`.
    dtype: parameter dtype (default: the checkpoint's; float32 for GGUF). `compute_dtype`
      defaults to it too.
    lora: adds fresh adapters (B = 0, so the policy starts equal to the checkpoint).
    mesh: load every tensor straight into its sharding on this mesh (default: one device).
    rng: for the adapters' A factors.
    with_value_head: attach the saved value head, or a fresh zero one if none was saved
      (a GGUF file never has one).
    config_overrides: other `ModelConfig` fields, e.g. `remat="full"`.
  """
  overrides: dict[str, Any] = {}
  if dtype is not None:
    overrides["param_dtype"] = jnp.dtype(dtype).name
  if compute_dtype is not None:
    overrides["dtype"] = jnp.dtype(compute_dtype).name
  overrides.update(config_overrides)
  config = read_model_config(path, **overrides)
  shardings = variable_shardings(config, lora, mesh, rules) if mesh is not None else None
  param_shardings = None if shardings is None else shardings["params"]
  gguf_file = gguf_io.gguf_file_of(path)
  if gguf_file is not None:
    params = gguf_io.load_gguf_params(gguf_io.open_gguf(gguf_file), gguf_file, config, shardings=param_shardings)
    head = None
  else:
    params = hf_io.load_hf_params(path, config, shardings=param_shardings)
    head = hf_io.load_value_head(path) if with_value_head else None
  variables: dict[str, Any] = {"params": params}
  if lora is not None:
    adapters = init_lora_params(config, lora, jax.random.key(0) if rng is None else rng)
    variables[LORA_COLLECTION] = adapters if shardings is None else jax.device_put(
        adapters, shardings[LORA_COLLECTION])
  if with_value_head:
    head = init_value_head_params(config) if head is None else head
    variables["value_head"] = head if shardings is None else jax.device_put(head, shardings["value_head"])
  return Policy(config=config, variables=variables, lora=lora)


def save_pretrained(policy: Policy, output_dir: str | os.PathLike[str], *, dtype: Any = "bfloat16",
                    tokenizer_dir: str | os.PathLike[str] | None = None,
                    max_shard_bytes: int = 5 * 2**30) -> pathlib.Path:
  """Writes the policy (adapters merged) in the HF format; see `hf_io.save_hf_checkpoint`."""
  merged = policy.merged()
  return hf_io.save_hf_checkpoint(
      output_dir, merged.config, merged.variables["params"], dtype=dtype,
      value_head=merged.variables.get("value_head"), tokenizer_dir=tokenizer_dir,
      max_shard_bytes=max_shard_bytes)
