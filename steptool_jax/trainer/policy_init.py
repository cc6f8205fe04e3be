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

import math
import os
import pathlib
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from steptool_jax.config.run import RunConfig
from steptool_jax.models.config import LoraConfig, ModelConfig, preset
from steptool_jax.models.lora import LORA_COLLECTION
from steptool_jax.models.policy import (Policy, abstract_variables, init_base_params, init_lora_params,
                                        init_value_head_params)
from steptool_jax.models.gguf_io import is_gguf
from steptool_jax.models.pretrained import load_pretrained, read_model_config, variable_shardings
from steptool_jax.parallel.sharding import sharded_abstract
from steptool_jax.trainer.algorithms import ALGORITHMS
from steptool_jax.trainer.run import checkpointing

# Presets without a vocabulary of their own: sized to the run's tokenizer.
TOKENIZER_SIZED_PRESETS = ("tiny", "tiny_wide")

# Fold-in constants that split the run's seed into independent streams.
INIT_STREAM, LORA_STREAM, RUN_STREAM, CRITIC_STREAM = 0, 1, 2, 3


def random_model_config(config: RunConfig, vocab_size: int) -> ModelConfig:
  """The architecture of a random init; the tiny presets take the tokenizer's vocabulary."""
  overrides = config.model.numerics()
  if config.model.preset in TOKENIZER_SIZED_PRESETS:
    overrides["vocab_size"] = vocab_size
  return preset(config.model.preset, **overrides)


def seed_key(config: RunConfig, stream: int) -> jax.Array:
  return jax.random.fold_in(jax.random.key(config.seed), stream)


def check_model_fits_mesh(model_config: ModelConfig, lora: LoraConfig | None, mesh: Mesh) -> None:
  """Every sharded weight dimension divides evenly over its mesh axes (else a `mesh.<axis>` error)."""
  shardings = variable_shardings(model_config, lora, mesh)
  shapes = nn.unbox(abstract_variables(model_config, lora))
  for path, leaf in jax.tree_util.tree_leaves_with_path(shapes):
    sharding = shardings
    for key in path:
      sharding = sharding[key.key]
    for dim, axes in zip(leaf.shape, sharding.spec):
      names = (axes,) if isinstance(axes, str) else tuple(axes or ())
      parts = math.prod(mesh.shape[name] for name in names)
      if dim % parts:
        where = "/".join(str(key.key) for key in path)
        raise ValueError(f"mesh.{names[0]}: {where} has a dimension of {dim}, which does not split evenly over"
                         f" {parts} devices of mesh axes {names}; choose axis sizes that divide it")


def _random_policy(config: RunConfig, vocab_size: int, mesh: Mesh) -> Policy:
  model_config = random_model_config(config, vocab_size)
  check_model_fits_mesh(model_config, config.model.lora.lora_config(), mesh)
  shardings = variable_shardings(model_config, None, mesh)
  params = jax.jit(lambda rng: init_base_params(model_config, rng), out_shardings=shardings["params"])(
      seed_key(config, INIT_STREAM))
  head = jax.device_put(init_value_head_params(model_config), shardings["value_head"])
  return Policy(config=model_config, variables={"params": params, "value_head": head})


def _pretrained_policy(path: str, config: RunConfig, mesh: Mesh) -> Policy:
  numerics = config.model.numerics()
  path = os.path.expanduser(path)
  check_model_fits_mesh(read_model_config(path, **numerics), config.model.lora.lora_config(), mesh)
  return load_pretrained(path, numerics.pop("param_dtype"), compute_dtype=numerics.pop("dtype"),
                         mesh=mesh, **numerics)


def _policy_of_run(workdir: str, config: RunConfig, vocab_size: int, mesh: Mesh) -> Policy:
  """The latest trained policy of one of our runs, adapters merged, in `config`'s numerics."""
  with checkpointing.latest_checkpoint(workdir, field="model.init_from") as (checkpointer, step):
    source_config = checkpointing.read_run_config(checkpointer, step)
    source = _starting_policy(source_config, vocab_size, mesh)
    source_lora = source_config.model.lora.lora_config()
    keys = ALGORITHMS[source_config.algorithm].trainable_collections(source_config)
    shapes = dict(jax.eval_shape(lambda: source.variables))
    if source_lora is not None:
      shapes[LORA_COLLECTION] = nn.unbox(abstract_variables(source.config, source_lora)[LORA_COLLECTION])
    shardings = variable_shardings(source.config, source_lora, mesh)
    master = jnp.dtype(source_config.model.master_dtype)
    target = {k: sharded_abstract(shapes[k], shardings[k], master) for k in keys}
    trained = checkpointer.restore_policy(step, target)
  policy = Policy(config=source.config, variables={**source.variables, **trained}, lora=source_lora).merged()
  # The run's numerics (dtypes, remat) apply from here on, whatever the source used.
  params = jax.tree.map(lambda x: x.astype(config.model.param_dtype), policy.variables["params"])
  return Policy(config=policy.config.replace(**config.model.numerics()),
                variables={**policy.variables, "params": params})


def run_config(workdir: str | os.PathLike[str]) -> RunConfig:
  """The resolved config saved with a run's latest checkpoint."""
  with checkpointing.latest_checkpoint(workdir) as (checkpointer, step):
    return checkpointing.read_run_config(checkpointer, step)


def policy_of_run(workdir: str | os.PathLike[str], vocab_size: int, mesh: Mesh) -> Policy:
  """The latest trained policy of one of our runs, adapters merged, in that run's own
  numerics (evaluation, export)."""
  return _policy_of_run(os.fspath(workdir), run_config(workdir), vocab_size, mesh)


def _starting_policy(config: RunConfig, vocab_size: int, mesh: Mesh) -> Policy:
  """The policy before this run's own adapters: merged, with a value head."""
  init_from = os.path.expanduser(config.model.init_from)
  if init_from and checkpointing.is_run_directory(init_from):
    return _policy_of_run(init_from, config, vocab_size, mesh)
  if init_from:
    path = pathlib.Path(init_from)
    if not (path / "config.json").is_file() and not is_gguf(path):
      raise ValueError(f"model.init_from: expected a workdir of ours (with {checkpointing.CHECKPOINT_DIR}/), a"
                       f" Hugging Face directory (with config.json) or a GGUF file, found none at {init_from}")
    return _pretrained_policy(init_from, config, mesh)
  if config.model.path:
    return _pretrained_policy(config.model.path, config, mesh)
  return _random_policy(config, vocab_size, mesh)


def initial_policy(config: RunConfig, vocab_size: int, mesh: Mesh) -> Policy:
  """The run's starting policy on `mesh`, with fresh LoRA adapters when `model.lora.enabled`."""
  policy = _starting_policy(config, vocab_size, mesh)
  lora = config.model.lora.lora_config()
  if lora is None:
    return policy
  shardings = variable_shardings(policy.config, lora, mesh)
  adapters = jax.jit(lambda rng: init_lora_params(policy.config, lora, rng),
                     out_shardings=shardings[LORA_COLLECTION])(seed_key(config, LORA_STREAM))
  variables = {**flax.core.unfreeze(policy.variables), LORA_COLLECTION: adapters}
  return Policy(config=policy.config, variables=variables, lora=lora)


def initial_critic(config: RunConfig, policy: Policy, mesh: Mesh) -> dict[str, Any] | None:
  """A separate critic's starting variables on `mesh` (`ppo.critic = "separate"`), else None.

  Under LoRA: fresh adapters of its own (seeded apart from the policy's; B = 0, so its trunk
  starts as the frozen base) and a fresh value head; no second copy of the base. Without
  LoRA: the policy's starting weights and value head, copied (as tunix does).
  """
  if not config.separate_critic:
    return None
  shardings = variable_shardings(policy.config, policy.lora, mesh)
  head = policy.variables.get("value_head")
  if head is None or policy.lora is not None:
    head = jax.device_put(init_value_head_params(policy.config), shardings["value_head"])
  if policy.lora is None:
    return {"params": policy.variables["params"], "value_head": head}
  adapters = jax.jit(lambda rng: init_lora_params(policy.config, policy.lora, rng),
                     out_shardings=shardings[LORA_COLLECTION])(seed_key(config, CRITIC_STREAM))
  return {LORA_COLLECTION: adapters, "value_head": head}
