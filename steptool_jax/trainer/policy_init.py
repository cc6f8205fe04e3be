"""The policy a run starts from, placed in its shardings on the mesh.

In order of precedence:

1. `model.init_from` = a workdir of ours (e.g. an SFT run): that run's own starting policy
   (rebuilt the same way, from its saved config), its latest checkpoint's trained
   collections on top, LoRA adapters merged into the base. Fresh adapters and the value
   head are then added as this run's config says.
2. `model.init_from` = a Hugging Face directory, or `model.path`: `load_pretrained`, each
   tensor read straight into its sharding.
3. Neither: a random init of the `model.preset` architecture (the tiny default), its
   vocabulary sized to the tokenizer, seeded by `seed`.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from steptool_jax.models.config import LoraConfig, ModelConfig, preset
from steptool_jax.models.lora import LORA_COLLECTION
from steptool_jax.models.policy import (Policy, abstract_variables, init_base_params, init_lora_params,
                                        init_value_head_params)
from steptool_jax.models.pretrained import load_pretrained, variable_shardings
from steptool_jax.models import hf_io
from steptool_jax.trainer import checkpointing
from steptool_jax.trainer.config_checks import check_model_fits_mesh
from steptool_jax.trainer.optimizer import trainable_collections

# Presets without a vocabulary of their own: sized to the run's tokenizer.
TOKENIZER_SIZED_PRESETS = ("tiny", "tiny_wide")

# Fold-in constants that split the run's seed into independent streams.
INIT_STREAM, LORA_STREAM, RUN_STREAM = 0, 1, 2


def lora_config(config: ml_collections.ConfigDict) -> LoraConfig | None:
  lora = config.model.lora
  if not lora.enabled:
    return None
  return LoraConfig(rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout, targets=tuple(lora.targets))


def _numerics(config: ml_collections.ConfigDict) -> dict[str, Any]:
  model = config.model
  return dict(param_dtype=model.param_dtype, dtype=model.compute_dtype, remat=model.remat,
              attention_impl=model.attention_impl)


def random_model_config(config: ml_collections.ConfigDict, vocab_size: int) -> ModelConfig:
  """The architecture of a random init; the tiny presets take the tokenizer's vocabulary."""
  overrides = _numerics(config)
  if config.model.preset in TOKENIZER_SIZED_PRESETS:
    overrides["vocab_size"] = vocab_size
  return preset(config.model.preset, **overrides)


def seed_key(config: ml_collections.ConfigDict, stream: int) -> jax.Array:
  return jax.random.fold_in(jax.random.key(config.seed), stream)


def _random_policy(config: ml_collections.ConfigDict, vocab_size: int, mesh: Mesh) -> Policy:
  model_config = random_model_config(config, vocab_size)
  check_model_fits_mesh(model_config, lora_config(config), mesh)
  shardings = variable_shardings(model_config, None, mesh)
  params = jax.jit(lambda rng: init_base_params(model_config, rng), out_shardings=shardings["params"])(
      seed_key(config, INIT_STREAM))
  head = jax.device_put(init_value_head_params(model_config), shardings["value_head"])
  return Policy(config=model_config, variables={"params": params, "value_head": head})


def _pretrained_policy(path: str, config: ml_collections.ConfigDict, mesh: Mesh) -> Policy:
  numerics = _numerics(config)
  path = os.path.expanduser(path)
  check_model_fits_mesh(ModelConfig.from_hf_config(hf_io.read_hf_config(path), **numerics), lora_config(config), mesh)
  return load_pretrained(path, numerics.pop("param_dtype"), compute_dtype=numerics.pop("dtype"),
                         mesh=mesh, **numerics)


def _policy_of_run(workdir: str, config: ml_collections.ConfigDict, vocab_size: int, mesh: Mesh) -> Policy:
  """The latest trained policy of one of our runs, adapters merged."""
  checkpointer = checkpointing.Checkpointer(workdir, read_only=True)
  step = checkpointer.latest_step()
  if step is None:
    raise ValueError(f"model.init_from: no checkpoint under {checkpointing.checkpoint_dir(workdir)}")
  source_config = ml_collections.ConfigDict(checkpointer.read_config(step))
  source = _starting_policy(source_config, vocab_size, mesh)
  source_lora = lora_config(source_config)
  keys = trainable_collections(source_config)
  shapes = dict(jax.eval_shape(lambda: source.variables))
  if source_lora is not None:
    shapes[LORA_COLLECTION] = nn.unbox(abstract_variables(source.config, source_lora)[LORA_COLLECTION])
  shardings = variable_shardings(source.config, source_lora, mesh)
  master = jnp.dtype(source_config.model.master_dtype)
  target = {k: jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, master, sharding=s), shapes[k], shardings[k])
            for k in keys}
  trained = checkpointer.restore_policy(step, target)
  checkpointer.close()
  policy = Policy(config=source.config, variables={**source.variables, **trained}, lora=source_lora).merged()
  # The run's numerics (dtypes, remat) apply from here on, whatever the source used.
  params = jax.tree.map(lambda x: x.astype(config.model.param_dtype), policy.variables["params"])
  return Policy(config=policy.config.replace(**_numerics(config)), variables={**policy.variables, "params": params})


def run_config(workdir: str | os.PathLike[str]) -> ml_collections.ConfigDict:
  """The resolved config saved with a run's latest checkpoint."""
  checkpointer = checkpointing.Checkpointer(workdir, read_only=True)
  step = checkpointer.latest_step()
  if step is None:
    raise ValueError(f"no checkpoint under {checkpointing.checkpoint_dir(workdir)}")
  config = ml_collections.ConfigDict(checkpointer.read_config(step))
  checkpointer.close()
  return config


def policy_of_run(workdir: str | os.PathLike[str], vocab_size: int, mesh: Mesh) -> Policy:
  """The latest trained policy of one of our runs, adapters merged, in that run's own
  numerics (evaluation, export)."""
  return _policy_of_run(os.fspath(workdir), run_config(workdir), vocab_size, mesh)


def _starting_policy(config: ml_collections.ConfigDict, vocab_size: int, mesh: Mesh) -> Policy:
  """The policy before this run's own adapters: merged, with a value head."""
  init_from = config.model.init_from
  if init_from and checkpointing.is_run_directory(init_from):
    return _policy_of_run(init_from, config, vocab_size, mesh)
  if init_from:
    if not (pathlib.Path(os.path.expanduser(init_from)) / "config.json").is_file():
      raise ValueError(f"model.init_from: expected a workdir of ours (with {checkpointing.CHECKPOINT_DIR}/) or a"
                       f" Hugging Face directory (with config.json), found neither at {init_from}")
    return _pretrained_policy(init_from, config, mesh)
  if config.model.path:
    return _pretrained_policy(config.model.path, config, mesh)
  return _random_policy(config, vocab_size, mesh)


def initial_policy(config: ml_collections.ConfigDict, vocab_size: int, mesh: Mesh) -> Policy:
  """The run's starting policy on `mesh`, with fresh LoRA adapters when `model.lora.enabled`."""
  policy = _starting_policy(config, vocab_size, mesh)
  lora = lora_config(config)
  if lora is None:
    return policy
  shardings = variable_shardings(policy.config, lora, mesh)
  adapters = jax.jit(lambda rng: init_lora_params(policy.config, lora, rng),
                     out_shardings=shardings[LORA_COLLECTION])(seed_key(config, LORA_STREAM))
  variables = {**flax.core.unfreeze(policy.variables), LORA_COLLECTION: adapters}
  return Policy(config=policy.config, variables=variables, lora=lora)
