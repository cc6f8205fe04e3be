"""Checks a run's configuration before anything expensive happens.

Every problem is a `ValueError` that names the field (`batch.minibatch_size: ...`) and says
what was expected and what was found, so a bad `--config.a.b=v` fails in the first second,
not after the model has loaded.
"""

from __future__ import annotations

import difflib
import math
import os
import pathlib
from typing import Any, Iterator, Mapping

import flax.linen as nn
import jax
import ml_collections
from jax.sharding import Mesh

from steptool_jax.models.config import ATTENTION_IMPLS, LORA_TARGETS, PRESETS, REMAT_POLICIES, LoraConfig, ModelConfig
from steptool_jax.models.policy import abstract_variables
from steptool_jax.models.pretrained import variable_shardings
from steptool_jax.parallel.mesh import resolve_axis_sizes
from steptool_jax.parallel.rules import MESH_AXES
from steptool_jax.envs.judge import CONTRIBUTIONS
from steptool_jax.envs.tasks import TEMPLATES
from steptool_jax.rl.gae import MODES
from steptool_jax.rl.kl import KL_PENALTIES
from steptool_jax.trainer.defaults import base_config
from steptool_jax.trainer.env_data import template_names

ALGORITHMS = ("ppo", "sft")
GRANULARITIES = ("step", "final", "summed")
STEP_WEIGHTINGS = ("paper", "original_code")
ROLLOUT_MODES = ("offline", "online")
ADVANTAGE_ESTIMATORS = ("gae", "group")
GROUP_SCOPES = ("group", "step")
KL_CONTROLLERS = ("adaptive", "fixed")
SCHEDULES = ("constant", "linear", "cosine")
DISTRIBUTED = ("auto", "on", "off")
DTYPES = ("float32", "bfloat16", "float16")


def flat_items(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
  """`("a.b.c", value)` for every leaf; the mesh is one leaf (its keys are axis names)."""
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, (Mapping, ml_collections.ConfigDict)) and name != "mesh":
      yield from flat_items(value, name + ".")
    else:
      yield name, value


def check_known_fields(config: ml_collections.ConfigDict) -> None:
  """Rejects fields the schema (`defaults.base_config`) does not have, with a suggestion."""
  known = dict(flat_items(base_config()))
  for name, _ in flat_items(config):
    if name not in known:
      close = difflib.get_close_matches(name, known, n=1)
      hint = f"; did you mean {close[0]!r}?" if close else ""
      raise ValueError(f"{name}: unknown config field{hint}")
  for name in known:
    if name not in dict(flat_items(config)):
      raise ValueError(f"{name}: missing from the config (start config files from trainer.defaults.base_config())")


def _expect(condition: bool, field: str, message: str) -> None:
  if not condition:
    raise ValueError(f"{field}: {message}")


def _one_of(config: ml_collections.ConfigDict, field: str, options: tuple[str, ...]) -> None:
  value = _get(config, field)
  _expect(value in options, field, f"expected one of {options}, found {value!r}")


def _positive(config: ml_collections.ConfigDict, field: str, *, allow_zero: bool = False) -> None:
  value = _get(config, field)
  ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
  _expect(ok, field, f"expected a {'non-negative' if allow_zero else 'positive'} number, found {value!r}")


def _get(config: ml_collections.ConfigDict, field: str) -> Any:
  node: Any = config
  for key in field.split("."):
    node = node[key]
  return node


def check_batch_sizes(config: ml_collections.ConfigDict, *, batch_shards: int, process_count: int) -> None:
  """Batch, minibatch and accumulation agree with each other and with the mesh.

  `batch_shards` is the size of the mesh axes the batch is split over (data x fsdp):
  every forward/backward pass splits its rows evenly over them.
  """
  batch = config.batch
  for name in ("size", "minibatch_size", "grad_accum_steps"):
    _positive(config, f"batch.{name}")
    _expect(isinstance(batch[name], int), f"batch.{name}", f"expected an integer, found {batch[name]!r}")
  per_update = batch.minibatch_size * batch.grad_accum_steps
  if config.algorithm == "sft":
    _expect(batch.size == per_update, "batch.size",
            f"SFT takes one optimizer step per batch, so expected batch.minibatch_size x batch.grad_accum_steps"
            f" = {batch.minibatch_size} x {batch.grad_accum_steps} = {per_update}, found {batch.size}")
  else:
    _expect(batch.size % per_update == 0, "batch.size",
            f"expected a multiple of batch.minibatch_size x batch.grad_accum_steps = {batch.minibatch_size} x"
            f" {batch.grad_accum_steps} = {per_update} (rows per optimizer step), found {batch.size}")
  _expect(batch.minibatch_size % batch_shards == 0, "batch.minibatch_size",
          f"expected a multiple of the {batch_shards} batch shards of the mesh (data x fsdp): every"
          f" forward/backward pass splits its rows over them; found {batch.minibatch_size}. Use a larger"
          " minibatch or move devices to the tensor axis")
  _expect(batch.size % process_count == 0, "batch.size",
          f"expected a multiple of the {process_count} processes (each loads its share), found {batch.size}")


def check_mesh(config: ml_collections.ConfigDict, num_devices: int) -> dict[str, int]:
  """The resolved mesh sizes; an error naming `mesh` when they do not fit the devices."""
  mesh = dict(config.mesh)
  unknown = set(mesh) - set(MESH_AXES)
  _expect(not unknown, "mesh", f"unknown axes {sorted(unknown)}; expected some of {MESH_AXES}")
  try:
    return resolve_axis_sizes(mesh, num_devices)
  except ValueError as e:
    raise ValueError(f"mesh: {mesh} does not fit the {num_devices} devices: {e}") from None


def check_model_source(config: ml_collections.ConfigDict) -> None:
  """A configured model directory must exist; real-model configs must name one."""
  model = config.model
  if model.require_path and not model.path:
    raise ValueError("model.path: this config trains a pretrained model; pass its local Hugging Face directory,"
                     " e.g. --config.model.path=/ckpt/Llama-3.1-8B-Instruct")
  if model.path:
    path = pathlib.Path(os.path.expanduser(model.path))
    _expect(path.is_dir(), "model.path", f"expected a local Hugging Face directory, found no directory at {path}")
    _expect((path / "config.json").is_file(), "model.path", f"expected {path}/config.json (a Hugging Face model)")
  if model.init_from:
    path = pathlib.Path(os.path.expanduser(model.init_from))
    _expect(path.is_dir(), "model.init_from",
            f"expected a run's workdir or a Hugging Face directory, found nothing at {path}")
  if not model.path and not model.init_from:
    _expect(model.preset in PRESETS, "model.preset", f"expected one of {sorted(PRESETS)}, found {model.preset!r}")
  if config.tokenizer == "" and not model.path:
    raise ValueError("tokenizer: expected 'builtin' or a tokenizer directory when model.path is not set")


def check_rollout(config: ml_collections.ConfigDict, *, process_count: int = 1) -> None:
  """Online rollouts and the critic-free advantages they enable."""
  rollout, ppo = config.rollout, config.ppo
  _positive(config, "rollout.group_size")
  _expect(isinstance(rollout.group_size, int), "rollout.group_size", f"expected an integer, found {rollout.group_size!r}")
  _positive(config, "rollout.temperature", allow_zero=True)
  _expect(0.0 < rollout.top_p <= 1.0, "rollout.top_p", f"expected a number in (0, 1], found {rollout.top_p!r}")
  _positive(config, "rollout.generation_batch", allow_zero=True)
  _positive(config, "rollout.width_bucket")
  _one_of(config, "ppo.advantage_estimator", ADVANTAGE_ESTIMATORS)
  _one_of(config, "ppo.group_scope", GROUP_SCOPES)
  online = config.algorithm == "ppo" and rollout.mode == "online"
  if online:
    _expect(not config.data.train_path, "data.train_path",
            f"rollout.mode='online' plays the built-in environment; expected no data file, found {config.data.train_path!r}")
    _expect(config.batch.size % rollout.group_size == 0, "batch.size",
            f"expected a multiple of rollout.group_size ({rollout.group_size}): a batch holds whole groups, found"
            f" {config.batch.size}")
    _expect(process_count == 1, "rollout.mode",
            f"'online' rollouts run in one process; found {process_count} processes (use 'offline' data)")
  if ppo.advantage_estimator == "group":
    _expect(online and rollout.group_size > 1, "ppo.advantage_estimator",
            "'group' normalises returns over the rollouts of a task: it needs rollout.mode='online' and"
            f" rollout.group_size > 1, found mode {rollout.mode!r} and group_size {rollout.group_size}")
    _expect(ppo.vf_coef == 0, "ppo.vf_coef",
            f"'group' advantages train no value head; expected 0, found {ppo.vf_coef!r}")


def validate(config: ml_collections.ConfigDict, *, num_devices: int, process_count: int = 1) -> dict[str, int]:
  """All checks; returns the resolved mesh sizes."""
  check_known_fields(config)
  _one_of(config, "algorithm", ALGORITHMS)
  _one_of(config, "distributed", DISTRIBUTED)
  _one_of(config, "rollout.mode", ROLLOUT_MODES)
  check_rollout(config, process_count=process_count)
  _one_of(config, "reward.granularity", GRANULARITIES)
  _one_of(config, "reward.weighting", STEP_WEIGHTINGS)
  _expect(config.reward.granularity == "step" or config.reward.weighting == "paper", "reward.weighting",
          f"'{config.reward.weighting}' weights step rewards, so it needs reward.granularity='step',"
          f" found {config.reward.granularity!r}")
  _one_of(config, "reward.kl_penalty", tuple(k for k in KL_PENALTIES if k != "full"))
  _one_of(config, "reward.kl_controller", KL_CONTROLLERS)
  _positive(config, "reward.init_kl_coef", allow_zero=True)
  _positive(config, "reward.kl_target")
  _positive(config, "reward.kl_horizon")
  _one_of(config, "ppo.gae_mode", MODES)
  for name in ("gamma", "lam"):
    value = config.ppo[name]
    _expect(0.0 <= value <= 1.0, f"ppo.{name}", f"expected a number in [0, 1], found {value!r}")
  for name in ("clip_eps", "value_clip", "ratio_threshold"):
    _positive(config, f"ppo.{name}")
  for name in ("vf_coef", "entropy_coef"):
    _positive(config, f"ppo.{name}", allow_zero=True)
  _positive(config, "ppo.epochs")
  _one_of(config, "optim.schedule", SCHEDULES)
  _positive(config, "optim.learning_rate")
  for name in ("warmup_steps", "weight_decay", "max_grad_norm", "eps"):
    _positive(config, f"optim.{name}", allow_zero=True)
  for name in ("b1", "b2"):
    _expect(0.0 <= config.optim[name] < 1.0, f"optim.{name}",
            f"expected a number in [0, 1), found {config.optim[name]!r}")
  _positive(config, "train.num_epochs")
  _positive(config, "train.num_steps", allow_zero=True)
  _positive(config, "checkpoint.every_steps")
  _positive(config, "checkpoint.keep")
  _positive(config, "log.every_steps")
  for name in ("param_dtype", "compute_dtype", "master_dtype"):
    _one_of(config, f"model.{name}", DTYPES)
  _one_of(config, "model.remat", REMAT_POLICIES)
  _one_of(config, "model.attention_impl", ATTENTION_IMPLS)
  _positive(config, "model.logits_chunk")
  lora = config.model.lora
  if lora.enabled:
    _positive(config, "model.lora.rank")
    _positive(config, "model.lora.alpha")
    _expect(0.0 <= lora.dropout < 1.0, "model.lora.dropout", f"expected a rate in [0, 1), found {lora.dropout!r}")
    unknown = set(lora.targets) - set(LORA_TARGETS)
    _expect(not unknown, "model.lora.targets",
            f"unknown projections {sorted(unknown)}; expected some of {LORA_TARGETS}")
  for name in ("max_context_len", "max_response_len", "min_bucket_len"):
    _positive(config, f"data.{name}")
  _positive(config, "data.max_steps", allow_zero=True)
  _positive(config, "data.env.num_tasks")
  _expect(0.0 <= config.data.env.mistake_rate <= 1.0, "data.env.mistake_rate",
          f"expected a probability in [0, 1], found {config.data.env.mistake_rate!r}")
  _one_of(config, "data.env.contribution", CONTRIBUTIONS)
  _one_of(config, "data.sft_loss_on", ("actions", "dialogue"))
  _positive(config, "data.env.alpha", allow_zero=True)
  unknown_templates = sorted(set(template_names(config.data.env.templates)) - set(TEMPLATES))
  _expect(not unknown_templates, "data.env.templates",
          f"unknown templates {unknown_templates}; expected some of {sorted(TEMPLATES)}")
  if config.data.train_path:
    path = pathlib.Path(os.path.expanduser(config.data.train_path))
    _expect(path.is_file(), "data.train_path", f"expected a data file, found nothing at {path}")
  sizes = check_mesh(config, num_devices)
  check_batch_sizes(config, batch_shards=sizes["data"] * sizes["fsdp"], process_count=process_count)
  check_model_source(config)
  return sizes



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
