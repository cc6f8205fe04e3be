"""Export a trained policy (or a GGUF model) as a Hugging Face directory that inference servers load.

    python -m steptool_jax.export --checkpoint=WORKDIR --output=WORKDIR/hf      # a run of ours, its latest step
    python -m steptool_jax.export --checkpoint=WORKDIR/checkpoints/1000/policy --params_key= \
        --base_model=/ckpt/ToolLLaMA-2-7b-v2 --output=/export/steptool-toolllama
    python -m steptool_jax.export --checkpoint=/models/SmolLM2-135M-Instruct.Q4_1.gguf \
        --output=/export/smollm2 --dtype=float32

`--checkpoint` is either
  * a run directory of ours (`python -m steptool_jax.train` / `sft --workdir`): its latest
    policy rebuilt from the run's own config (base model, init_from, adapters merged) and its
    tokenizer (the built-in one, the model's, or the configured directory); or
  * an Orbax checkpoint item (a directory `orbax.checkpoint.StandardCheckpointer` reads)
    whose tree holds the policy variables `{"params"?, "lora"?, "value_head"?}` at
    `--params_key` (a dotted path, default `params`). When `params` is absent (LoRA runs
    may save only what they train) the base weights come from `--base_model`; or
  * a Hugging Face directory (with `config.json`), e.g. to re-export in another dtype; or
  * a GGUF file (or a directory holding one): dequantized, written as safetensors.

`--base_model` is an HF directory or a GGUF file.

LoRA adapters are merged into the base weights (scale `--lora_alpha / rank`, the rank read
from the adapter shapes). The output holds config.json, safetensors shards (+ index), the
tokenizer and generation-config files of `--base_model` (or of an HF `--checkpoint`; for a
GGUF source, the tokenizer `transformers` converts from its metadata, chat template
included), and `value_head.safetensors` when the checkpoint has a value head.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Sequence

import gguf
import jax
import numpy as np
from absl import app, flags, logging

from steptool_jax.data.errors import DataError
from steptool_jax.models import gguf_io, hf_io
from steptool_jax.models.config import LoraConfig
from steptool_jax.models.lora import LORA_COLLECTION
from steptool_jax.models.policy import Policy
from steptool_jax.models.pretrained import load_pretrained, save_pretrained

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Orbax checkpoint item, HF directory or GGUF file.",
                                  required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Directory to write the HF checkpoint to.", required=True)
_BASE_MODEL = flags.DEFINE_string("base_model", None, "HF directory or GGUF file: config, tokenizer, and base "
                                  "weights when the checkpoint holds only adapters.")
_PARAMS_KEY = flags.DEFINE_string("params_key", "params", "Dotted path of the policy variables in the Orbax tree.")
_LORA_ALPHA = flags.DEFINE_float("lora_alpha", 16.0, "LoRA alpha the adapters were trained with.")
_DTYPE = flags.DEFINE_string("dtype", "bfloat16", "dtype of the written weights.")
_MAX_SHARD_GB = flags.DEFINE_float("max_shard_gb", 5.0, "Largest safetensors file, in GiB.")


def restore_orbax_tree(path: str | pathlib.Path) -> Any:
  """The saved tree, every array restored onto the first CPU device (whatever mesh saved it)."""
  import orbax.checkpoint as ocp  # noqa: PLC0415 (only this entry point needs it)

  checkpointer = ocp.StandardCheckpointer()
  metadata = checkpointer.metadata(path).item_metadata.tree
  cpu = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])

  def abstract(leaf: Any) -> Any:
    if hasattr(leaf, "shape") and leaf.shape is not None and getattr(leaf, "dtype", None) is not None:
      if isinstance(leaf, ocp.metadata.ArrayMetadata):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=cpu)
      return np.zeros(leaf.shape, leaf.dtype)
    return leaf

  target = jax.tree_util.tree_map(abstract, metadata, is_leaf=lambda x: not isinstance(x, (dict, list, tuple)))
  return checkpointer.restore(path, target)


def select(tree: Any, dotted: str) -> Any:
  node = tree
  for key in filter(None, dotted.split(".")):
    if not isinstance(node, dict) or key not in node:
      raise ValueError(f"--params_key: no {key!r} in the checkpoint tree (have {sorted(node) if isinstance(node, dict) else type(node).__name__})")
    node = node[key]
  return node


def lora_rank(adapters: Any) -> int:
  """The rank of saved adapters: the last axis of any `a` factor."""
  for path, leaf in jax.tree_util.tree_leaves_with_path(adapters):
    if getattr(path[-1], "key", None) == "a":
      return int(leaf.shape[-1])
  raise ValueError("lora: no adapter factor `a` found in the checkpoint")


def policy_from_checkpoint(checkpoint: str, base_model: str | None, params_key: str,
                           lora_alpha: float) -> tuple[Policy, str | None]:
  """The policy a checkpoint describes, and the model (HF directory or GGUF file) whose tokenizer goes with it."""
  if gguf_io.is_gguf(checkpoint):
    return load_pretrained(checkpoint, with_value_head=False), checkpoint
  if (pathlib.Path(checkpoint) / "config.json").is_file():
    return load_pretrained(checkpoint), checkpoint
  if base_model is None:
    raise ValueError("--base_model: required with an Orbax checkpoint (for config.json and the tokenizer)")
  variables = select(restore_orbax_tree(checkpoint), params_key)
  adapters = variables.get(LORA_COLLECTION)
  lora = None if not adapters else LoraConfig(rank=lora_rank(adapters), alpha=lora_alpha)
  base = load_pretrained(base_model, with_value_head=False)
  merged_vars = dict(base.variables)
  if variables.get("params") is not None:
    merged_vars["params"] = variables["params"]
  if lora is not None:
    merged_vars[LORA_COLLECTION] = adapters
  if variables.get("value_head") is not None:
    merged_vars["value_head"] = variables["value_head"]
  return Policy(config=base.config, variables=merged_vars, lora=lora), base_model


def policy_of_run(workdir: str) -> tuple[Policy, Any]:
  """The latest policy of one of our runs (adapters merged, the run's numerics) and its tokenizer."""
  from steptool_jax.models.tokenizer import load_tokenizer  # noqa: PLC0415
  from steptool_jax.parallel import make_mesh  # noqa: PLC0415
  from steptool_jax.trainer import policy_init  # noqa: PLC0415
  run = policy_init.run_config(workdir)
  tokenizer = load_tokenizer(run.tokenizer, run.model.path)
  mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.local_devices()[:1])
  return policy_init.policy_of_run(workdir, len(tokenizer), mesh), tokenizer


def save_tokenizer(tokenizer: Any, output: str | pathlib.Path) -> list[str]:
  """A transformers tokenizer's files into `output`, loadable by transformers 4 and 5 alike."""
  written = tokenizer.save_pretrained(output)
  # transformers 5 records its own class name, which transformers 4 (and the servers pinned
  # to it) cannot resolve; the generic fast tokenizer class loads the same tokenizer.json in both.
  config_file = pathlib.Path(output) / "tokenizer_config.json"
  tokenizer_config = json.loads(config_file.read_text())
  tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
  config_file.write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n")
  return sorted(pathlib.Path(f).name for f in written)


def write_tokenizer(source: str, output: str | pathlib.Path) -> list[str]:
  """The tokenizer of `source` into `output`: converted from a GGUF file's metadata (written by
  `save_pretrained`, chat template included), or the tokenizer files of an HF directory copied."""
  gguf_file = gguf_io.gguf_file_of(source)
  if gguf_file is not None:
    # The weights are still worth exporting from a file without a tokenizer: say so, go on.
    # (The reader is the one the weights were read with: cached, not parsed again.)
    if gguf.Keys.Tokenizer.LIST not in gguf_io.open_gguf(gguf_file).fields:
      logging.warning("no tokenizer written: %s holds none (no %s)", gguf_file, gguf.Keys.Tokenizer.LIST)
      return []
    try:
      tokenizer = gguf_io.load_gguf_tokenizer(gguf_file)
    except DataError as e:
      logging.warning("no tokenizer written: %s", e)
      return []
    return save_tokenizer(tokenizer, output)
  return hf_io.copy_tokenizer_files(source, output)


def main(argv: Sequence[str]) -> None:
  del argv
  from steptool_jax.trainer.run.checkpointing import is_run_directory  # noqa: PLC0415
  tokenizer = tokenizer_source = None
  if is_run_directory(_CHECKPOINT.value):
    policy, tokenizer = policy_of_run(_CHECKPOINT.value)
  else:
    policy, tokenizer_source = policy_from_checkpoint(_CHECKPOINT.value, _BASE_MODEL.value, _PARAMS_KEY.value,
                                                      _LORA_ALPHA.value)
  out = save_pretrained(policy, _OUTPUT.value, dtype=_DTYPE.value,
                        max_shard_bytes=int(_MAX_SHARD_GB.value * 2**30))
  written = []
  if jax.process_index() == 0:
    if tokenizer is not None:
      written = save_tokenizer(tokenizer, out)
    elif tokenizer_source:
      written = write_tokenizer(tokenizer_source, out)
  logging.info("exported %s (%s, %d params) to %s; tokenizer files: %s", _CHECKPOINT.value,
               _DTYPE.value, policy.config.num_params(), out, written or "none")


if __name__ == "__main__":
  app.run(main)
