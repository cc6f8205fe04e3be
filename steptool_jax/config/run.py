"""Every setting of a training run, one typed section per concern: the schema of a run.

    config = base_config()                        # the ConfigDict configs/*.py start from
    run = parse_run_config(config)                # typed, checked: run.ppo.vf_coef, run.env.num_tasks, ...

Each section is a frozen dataclass that owns its fields' defaults, their documentation (the
comment beside each field) and its checks; `RunConfig.__post_init__` adds the checks that
span sections (batch sizes and rollouts, critic-free advantages, the model source). The
ConfigDict that config files edit and `--config.a.b=value` overrides is generated from the
defaults, so a field that is not here is a typo, rejected by name with a suggestion. Strings
that may be unset are `""` (never None), so overrides type-check. The environment section is
`envs.settings.EnvSettings`, which evaluation shares.

Names of the choices the trainer implements (algorithms, advantage estimators, schedules)
live here too; the modules that implement them look them up by these names.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import tempfile
from typing import Any, Mapping

import ml_collections

from steptool_jax.config import schema
from steptool_jax.config.schema import ConfigError
from steptool_jax.data.render import TEMPLATES as CHAT_TEMPLATES
from steptool_jax.envs.settings import EnvSettings
from steptool_jax.models.config import ATTENTION_IMPLS, LORA_TARGETS, PRESETS, REMAT_POLICIES, LoraConfig
from steptool_jax.parallel.mesh import resolve_axis_sizes
from steptool_jax.parallel.rules import MESH_AXES
from steptool_jax.rewards.placement import WEIGHTINGS
from steptool_jax.rl.gae import MODES as GAE_MODES
from steptool_jax.rl.group_advantages import SCOPES as GROUP_SCOPES
from steptool_jax.rl.kl import KL_PENALTIES
from steptool_jax.rl.kl_controller import KL_CONTROLLERS

ALGORITHMS = ("ppo", "sft")  # python -m steptool_jax.train | python -m steptool_jax.sft
ENTRY_POINTS = {"ppo": "steptool_jax.train", "sft": "steptool_jax.sft"}
ADVANTAGE_ESTIMATORS = ("gae", "group")  # trainer.updates.advantages
ROLLOUT_MODES = ("offline", "online")
CRITICS = ("shared", "separate")  # trainer.updates.ppo
OLD_LOGP = ("recompute", "behaviour")
REWARD_NORMALIZATION = ("none", "running")
SCHEDULES = ("constant", "linear", "cosine")  # trainer.optimizer
DISTRIBUTED = ("auto", "on", "off")
DTYPES = ("float32", "bfloat16", "float16")
SFT_LOSS_ON = ("actions", "dialogue")
WANDB_MODES = ("online", "offline")
MAX_SEED = schema.MAX_SEED


@dataclasses.dataclass(frozen=True)
class LoraSection:
  """LoRA adapters on the policy (`model.lora.*`); the base weights are then frozen."""

  enabled: bool = False
  rank: int = 8
  alpha: float = 16.0  # scale alpha / rank
  dropout: float = 0.0
  targets: tuple[str, ...] = LORA_TARGETS

  def __post_init__(self):
    schema.positive("rank", self.rank)
    schema.positive("alpha", self.alpha)
    schema.number("dropout", self.dropout, low=0.0, high=1.0, high_open=True)
    unknown = sorted(set(self.targets) - set(LORA_TARGETS))
    if unknown or not self.targets:
      raise ConfigError("targets", f"expected some of {LORA_TARGETS}, found {self.targets!r}")

  def lora_config(self) -> LoraConfig | None:
    """The models' `LoraConfig`, or None when LoRA is off."""
    if not self.enabled:
      return None
    return LoraConfig(rank=self.rank, alpha=self.alpha, dropout=self.dropout, targets=self.targets)


@dataclasses.dataclass(frozen=True)
class ModelSection:
  """The policy's architecture, weights and numerics (`model.*`)."""

  preset: str = "tiny"  # architecture of a random init (steptool_jax.models.PRESETS)
  path: str = ""  # local model: a Hugging Face directory, or a GGUF file: architecture, weights, tokenizer
  require_path: bool = False  # the real-model configs set this: no path is an error
  init_from: str = ""  # our run's workdir (e.g. an SFT run) or an HF directory to start from
  param_dtype: str = "float32"  # frozen base weights
  compute_dtype: str = "float32"
  master_dtype: str = "float32"  # trainable weights and optimizer moments
  remat: str = "none"  # none | full | dots
  attention_impl: str = "xla"  # xla | cudnn
  logits_chunk: int = 512  # time chunk of the log-prob computation
  value_head_dropout: float = 0.0
  lora: LoraSection = LoraSection()

  def __post_init__(self):
    for name in ("param_dtype", "compute_dtype", "master_dtype"):
      schema.one_of(name, getattr(self, name), DTYPES)
    schema.one_of("remat", self.remat, REMAT_POLICIES)
    schema.one_of("attention_impl", self.attention_impl, ATTENTION_IMPLS)
    schema.positive("logits_chunk", self.logits_chunk)
    schema.number("value_head_dropout", self.value_head_dropout, low=0.0, high=1.0, high_open=True)

  def numerics(self) -> dict[str, Any]:
    """The `ModelConfig` fields this section sets on any architecture."""
    return dict(param_dtype=self.param_dtype, dtype=self.compute_dtype, remat=self.remat,
                attention_impl=self.attention_impl)


@dataclasses.dataclass(frozen=True)
class DataSection:
  """Where the data comes from and how it is rendered and tokenised (`data.*`)."""

  train_path: str = ""  # step-grained TSV (ppo) or SFT json (sft); "" = the built-in environment's data
  cache_dir: str = ""  # "" = WORKDIR/cache (generated env data, tokenised datasets)
  template: str = "toolllama"  # the model's chat format (data.render.TEMPLATES): data, prompts, episodes
  max_context_len: int = 3072
  max_response_len: int = 1024  # also the most tokens generated per action
  min_bucket_len: int = 256  # smallest length bucket; = max length gives one shape
  max_steps: int = 0  # step slots per row; 0 = the most steps of any row
  add_bos: bool = True
  eos_after_actions: bool = False
  skip_invalid: bool = False
  sft_loss_on: str = "actions"  # actions | dialogue (SFT: which tokens are targets)

  def __post_init__(self):
    schema.one_of("template", self.template, CHAT_TEMPLATES)
    for name in ("max_context_len", "max_response_len", "min_bucket_len"):
      schema.positive(name, getattr(self, name))
    schema.positive("max_steps", self.max_steps, allow_zero=True)
    schema.one_of("sft_loss_on", self.sft_loss_on, SFT_LOSS_ON)


@dataclasses.dataclass(frozen=True)
class RolloutSection:
  """Where PPO batches come from (`rollout.*`).

  `offline`: fixed step-grained data. `online`: episodes the current policy plays in the
  built-in environment (the train split of `env`, `env.max_steps` actions per episode),
  judged by its rules; `batch.size` rows = `batch.size / group_size` tasks, each played
  `group_size` times.
  """

  mode: str = "offline"  # offline | online
  group_size: int = 1  # episodes per task in a batch (> 1 for ppo.advantage_estimator=group)
  temperature: float = 1.0  # sampling of the online episodes
  top_p: float = 1.0
  generation_batch: int = 0  # rows per generate call; 0 = batch.size
  width_bucket: int = 128  # prompts are left-padded to a multiple of this (fewer compiles)
  # Episodes keep their KV cache across turns (each action prefills only what its context
  # adds); False re-prefills every context whole (the same actions, log-probs to rounding).
  reuse_cache: bool = True

  def __post_init__(self):
    schema.one_of("mode", self.mode, ROLLOUT_MODES)
    schema.positive("group_size", self.group_size)
    schema.positive("temperature", self.temperature, allow_zero=True)
    schema.number("top_p", self.top_p, low=0.0, high=1.0, low_open=True)
    schema.positive("generation_batch", self.generation_batch, allow_zero=True)
    schema.positive("width_bucket", self.width_bucket)


@dataclasses.dataclass(frozen=True)
class BatchSection:
  """Rows per step (PPO: per iteration; SFT: per optimizer step), rows per forward/backward
  pass, and passes accumulated into one optimizer step. All global (all processes)."""

  size: int = 8
  minibatch_size: int = 2
  grad_accum_steps: int = 4

  def __post_init__(self):
    for name in ("size", "minibatch_size", "grad_accum_steps"):
      schema.positive(name, getattr(self, name))

  @property
  def rows_per_optimizer_step(self) -> int:
    return self.minibatch_size * self.grad_accum_steps


@dataclasses.dataclass(frozen=True)
class PPOSection:
  """The PPO update (`ppo.*`); the paper's constants by default."""

  epochs: int = 4  # passes over each batch
  gamma: float = 0.99
  lam: float = 0.95
  gae_mode: str = "step"  # step (over action tokens) | token (every position, as the original)
  # gae (value head, GAE over the reward tensor) | group (critic-free: group-normalised step
  # returns-to-go over the rollouts of one task; online with rollout.group_size > 1, vf_coef 0,
  # the KL coefficient then weighs a KL term of the loss instead of the rewards)
  advantage_estimator: str = "gae"
  group_scope: str = "group"  # group | step (rl.group_advantages)
  whiten_advantages: bool = True
  clip_eps: float = 0.2
  value_clip: float = 0.2
  vf_coef: float = 0.1
  entropy_coef: float = 0.0
  ratio_threshold: float = 10.0  # a micro-batch whose mean ratio exceeds this is skipped
  # shared: the value head on the policy's trunk (the original); separate: a critic with its own
  # trunk (under LoRA: the same frozen base with its own adapters; without: a full copy of the
  # starting weights) and head, trained by the value loss only, with its own optimizer state.
  critic: str = "shared"
  # The first N updates train only the critic (separate: the whole critic; shared: the value
  # head alone); the policy and the KL coefficient do not move.
  critic_warmup_updates: int = 0
  # recompute: old log-probs from a forward of the current policy over the batch (the
  # original); behaviour: the log-probs the rollout sampled with (online only; skips the
  # policy's log-prob forward of the rollout statistics).
  old_logp: str = "recompute"

  def __post_init__(self):
    schema.positive("epochs", self.epochs)
    schema.one_of("critic", self.critic, CRITICS)
    if isinstance(self.critic_warmup_updates, bool) or not isinstance(self.critic_warmup_updates, int) or (
        self.critic_warmup_updates < 0):
      raise ConfigError("critic_warmup_updates", f"expected an integer >= 0, found {self.critic_warmup_updates!r}")
    schema.one_of("old_logp", self.old_logp, OLD_LOGP)
    schema.number("gamma", self.gamma, low=0.0, high=1.0)
    schema.number("lam", self.lam, low=0.0, high=1.0)
    schema.one_of("gae_mode", self.gae_mode, GAE_MODES)
    schema.one_of("advantage_estimator", self.advantage_estimator, ADVANTAGE_ESTIMATORS)
    schema.one_of("group_scope", self.group_scope, GROUP_SCOPES)
    for name in ("clip_eps", "value_clip", "ratio_threshold"):
      schema.positive(name, getattr(self, name))
    for name in ("vf_coef", "entropy_coef"):
      schema.positive(name, getattr(self, name), allow_zero=True)


@dataclasses.dataclass(frozen=True)
class RewardSection:
  """Which step rewards land on which tokens, and the KL penalty (`reward.*`).

  `placement` (rewards.placement): `paper` (StepTool: each step's reward on its last action
  token), `original_code` (the original trainer's weighting, a compatibility mode),
  `final_only` (PPO with the final reward), `summed` (all step rewards on the last token).
  """

  placement: str = "paper"
  # none | running: step rewards divided by the running std of the episodes' returns (the sum of
  # a row's step rewards) over every batch so far; the KL term keeps its scale. The state is
  # checkpointed. Returns that add up to several per episode (StepTool's summed step rewards)
  # are then on the scale of a final-reward run's.
  normalize: str = "none"
  kl_penalty: str = "kl"  # kl | abs | mse | low_var_kl
  kl_controller: str = "adaptive"  # adaptive | fixed
  init_kl_coef: float = 0.3
  kl_target: float = 6.0
  kl_horizon: float = 10000.0

  def __post_init__(self):
    schema.one_of("placement", self.placement, WEIGHTINGS)
    schema.one_of("normalize", self.normalize, REWARD_NORMALIZATION)
    schema.one_of("kl_penalty", self.kl_penalty, KL_PENALTIES)
    schema.one_of("kl_controller", self.kl_controller, KL_CONTROLLERS)
    schema.positive("init_kl_coef", self.init_kl_coef, allow_zero=True)
    schema.positive("kl_target", self.kl_target)
    schema.positive("kl_horizon", self.kl_horizon)


@dataclasses.dataclass(frozen=True)
class OptimSection:
  """AdamW on a learning-rate schedule with optional clipping (`optim.*`)."""

  learning_rate: float = 1e-5
  schedule: str = "constant"  # constant | linear | cosine (after warmup)
  warmup_steps: int = 0
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  weight_decay: float = 0.0
  # 0 = no clipping. 1.0 online too: the built-in benchmark's online PPO norms run 0.2-2.2
  # (median 0.8-1.0), so it clips the larger updates only (docs/training.md, "Optimizer").
  max_grad_norm: float = 1.0

  def __post_init__(self):
    schema.positive("learning_rate", self.learning_rate)
    schema.one_of("schedule", self.schedule, SCHEDULES)
    for name in ("warmup_steps", "eps", "weight_decay", "max_grad_norm"):
      schema.positive(name, getattr(self, name), allow_zero=True)
    for name in ("b1", "b2"):
      schema.number(name, getattr(self, name), low=0.0, high=1.0, high_open=True)


@dataclasses.dataclass(frozen=True)
class TrainSection:
  """How long (`train.*`)."""

  num_epochs: int = 5  # passes over the data
  num_steps: int = 0  # > 0 overrides num_epochs

  def __post_init__(self):
    schema.positive("num_epochs", self.num_epochs)
    schema.positive("num_steps", self.num_steps, allow_zero=True)


@dataclasses.dataclass(frozen=True)
class CheckpointSection:
  """Orbax checkpoints in WORKDIR/checkpoints (`checkpoint.*`)."""

  every_steps: int = 100
  keep: int = 3
  async_save: bool = True
  # A CRC-32 of every file in each step's manifest, checked at restore: one more read of the
  # checkpoint at save and at restore (~1 s per GiB on a 2-core VM). Off, a restore still
  # checks that every file is there with its size and that every array is finite.
  verify: bool = True

  def __post_init__(self):
    schema.positive("every_steps", self.every_steps)
    schema.positive("keep", self.keep)


@dataclasses.dataclass(frozen=True)
class WandbSection:
  enabled: bool = False
  project: str = "steptool_jax"
  entity: str = ""
  name: str = ""
  mode: str = "online"  # online | offline

  def __post_init__(self):
    schema.one_of("mode", self.mode, WANDB_MODES)


@dataclasses.dataclass(frozen=True)
class LogSection:
  """Metrics: WORKDIR/metrics.jsonl always, TensorBoard and W&B optionally (`log.*`)."""

  every_steps: int = 1
  tensorboard: bool = True
  progress_bar: bool = True
  peak_tflops: float = 0.0  # per device, for MFU; 0 = look the device up
  wandb: WandbSection = WandbSection()

  def __post_init__(self):
    schema.positive("every_steps", self.every_steps)
    schema.positive("peak_tflops", self.peak_tflops, allow_zero=True)


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """A whole run: what `python -m steptool_jax.train` / `sft` execute."""

  algorithm: str = "ppo"  # ppo (python -m steptool_jax.train) | sft (python -m steptool_jax.sft)
  seed: int = 0
  # Device mesh: sizes of the `data`, `fsdp` and `tensor` axes; one may be -1 (the rest).
  mesh: dict[str, int] = dataclasses.field(default_factory=lambda: {"data": 1, "fsdp": -1, "tensor": 1})
  distributed: str = "auto"  # jax.distributed.initialize(): auto = when the environment names several processes
  tokenizer: str = "builtin"  # builtin = the environment's (the tiny models'); "" = the model's own (model.path); or a directory
  model: ModelSection = ModelSection()
  data: DataSection = DataSection()
  env: EnvSettings = EnvSettings()
  rollout: RolloutSection = RolloutSection()
  batch: BatchSection = BatchSection()
  ppo: PPOSection = PPOSection()
  reward: RewardSection = RewardSection()
  optim: OptimSection = OptimSection()
  train: TrainSection = TrainSection()
  checkpoint: CheckpointSection = CheckpointSection()
  log: LogSection = LogSection()

  def __post_init__(self):
    schema.one_of("algorithm", self.algorithm, ALGORITHMS)
    schema.seed("seed", self.seed)
    schema.one_of("distributed", self.distributed, DISTRIBUTED)
    unknown = sorted(set(self.mesh) - set(MESH_AXES))
    if unknown:
      raise ConfigError("mesh", f"unknown axes {unknown}; expected some of {MESH_AXES}")
    self._check_batch()
    self._check_rollout()
    if self.model.require_path and not self.model.path:
      raise ConfigError("model.path", "this config trains a pretrained model; pass its local Hugging Face"
                                      " directory or GGUF file, e.g. --config.model.path=/ckpt/Llama-3.1-8B-Instruct")
    if not self.model.path and not self.model.init_from and self.model.preset not in PRESETS:
      raise ConfigError("model.preset", f"expected one of {sorted(PRESETS)}, found {self.model.preset!r}")
    if self.tokenizer == "" and not self.model.path:
      raise ConfigError("tokenizer", "expected 'builtin' or a tokenizer directory when model.path is not set")

  def _check_batch(self) -> None:
    batch = self.batch
    per_update = batch.rows_per_optimizer_step
    if self.algorithm == "sft" and batch.size != per_update:
      raise ConfigError("batch.size", f"SFT takes one optimizer step per batch, so expected batch.minibatch_size x"
                                      f" batch.grad_accum_steps = {batch.minibatch_size} x {batch.grad_accum_steps}"
                                      f" = {per_update}, found {batch.size}")
    if batch.size % per_update:
      raise ConfigError("batch.size", f"expected a multiple of batch.minibatch_size x batch.grad_accum_steps ="
                                      f" {batch.minibatch_size} x {batch.grad_accum_steps} = {per_update} (rows per"
                                      f" optimizer step), found {batch.size}")

  def _check_rollout(self) -> None:
    if self.online:
      if self.data.train_path:
        raise ConfigError("data.train_path", "rollout.mode='online' plays the built-in environment; expected no"
                                             f" data file, found {self.data.train_path!r}")
      if self.batch.size % self.rollout.group_size:
        raise ConfigError("batch.size", f"expected a multiple of rollout.group_size ({self.rollout.group_size}):"
                                        f" a batch holds whole groups, found {self.batch.size}")
    if self.ppo.advantage_estimator == "group":
      if not (self.online and self.rollout.group_size > 1):
        raise ConfigError("ppo.advantage_estimator",
                          "'group' normalises returns over the rollouts of a task: it needs rollout.mode='online'"
                          f" and rollout.group_size > 1, found mode {self.rollout.mode!r} and group_size"
                          f" {self.rollout.group_size}")
      if self.ppo.vf_coef != 0:
        raise ConfigError("ppo.vf_coef", f"'group' advantages train no value head; expected 0, found"
                                         f" {self.ppo.vf_coef!r}")
      if self.ppo.critic != "shared" or self.ppo.critic_warmup_updates:
        raise ConfigError("ppo.critic", "'group' advantages use no critic; expected critic='shared' and"
                                        f" critic_warmup_updates=0, found {self.ppo.critic!r} and"
                                        f" {self.ppo.critic_warmup_updates}")
    if self.ppo.old_logp == "behaviour" and not self.online:
      raise ConfigError("ppo.old_logp", "'behaviour' log-probs come from online rollouts; expected"
                                        f" rollout.mode='online' (and algorithm 'ppo'), found {self.rollout.mode!r}")

  @property
  def online(self) -> bool:
    """PPO on episodes the current policy plays (`rollout.mode = "online"`)."""
    return self.algorithm == "ppo" and self.rollout.mode == "online"

  @property
  def separate_critic(self) -> bool:
    return self.algorithm == "ppo" and self.ppo.critic == "separate"

  @property
  def entry_point(self) -> str:
    return ENTRY_POINTS[self.algorithm]

  def check_paths(self) -> None:
    """The files and directories the config names exist (run before anything is loaded)."""
    model = self.model
    if model.path:
      path = pathlib.Path(os.path.expanduser(model.path))
      if not path.exists():
        raise ConfigError("model.path", f"expected a local Hugging Face directory, found no directory at {path}"
                                        " (a .gguf file works too)")
      if path.is_dir() and not (path / "config.json").is_file() and not any(path.glob("*.gguf")):
        raise ConfigError("model.path", f"expected {path}/config.json (a Hugging Face model) or a .gguf file in it")
      if path.is_file() and path.suffix != ".gguf":
        raise ConfigError("model.path", f"expected a local Hugging Face directory or a .gguf file, found the file"
                                        f" {path}")
    if model.init_from:
      path = pathlib.Path(os.path.expanduser(model.init_from))
      if not path.exists():
        raise ConfigError("model.init_from", f"expected a run's workdir or a Hugging Face directory, found nothing"
                                             f" at {path}")
    if self.data.train_path:
      path = pathlib.Path(os.path.expanduser(self.data.train_path))
      if not path.is_file():
        raise ConfigError("data.train_path", f"expected a data file, found nothing at {path}")

  def check_output_paths(self, workdir: str | os.PathLike[str]) -> None:
    """The run can write where it writes: `--workdir` and `data.cache_dir` ("" = WORKDIR/cache)
    are directories, or can be made, and are writable (run before anything is loaded)."""
    writable_directory("--workdir", workdir)
    if self.data.cache_dir:
      writable_directory("data.cache_dir", os.path.expanduser(self.data.cache_dir))

  def mesh_sizes(self, num_devices: int, process_count: int = 1) -> dict[str, int]:
    """The resolved mesh axis sizes; errors naming `mesh` or `batch.*` when they do not fit."""
    try:
      sizes = resolve_axis_sizes(dict(self.mesh), num_devices)
    except ValueError as e:
      raise ConfigError("mesh", f"{dict(self.mesh)} does not fit the {num_devices} devices: {e}") from None
    shards = sizes["data"] * sizes["fsdp"]
    if self.batch.minibatch_size % shards:
      raise ConfigError("batch.minibatch_size",
                        f"expected a multiple of the {shards} batch shards of the mesh (data x fsdp): every"
                        f" forward/backward pass splits its rows over them; found {self.batch.minibatch_size}. Use a"
                        " larger minibatch or move devices to the tensor axis")
    if self.batch.size % process_count:
      raise ConfigError("batch.size", f"expected a multiple of the {process_count} processes (each loads its"
                                      f" share), found {self.batch.size}")
    return sizes


def writable_directory(field: str, path: str | os.PathLike[str]) -> None:
  """`path` is a directory this process can write to, or one it can create.

  The check is a temporary file (made and removed at once) in `path`, or in its nearest
  existing ancestor when `path` does not exist yet: permission bits, read-only file systems
  and a regular file in the way all show up, as they would later.

  Raises:
    ConfigError: naming `field`, the path and what is in the way.
  """
  path = pathlib.Path(path).absolute()
  existing = path
  while not existing.exists() and existing != existing.parent:
    existing = existing.parent
  if not existing.is_dir():
    beyond = "" if existing == path else f" in the way of {path}"
    raise ConfigError(field, f"expected a directory, found the {_kind(existing)} {existing}{beyond}")
  try:
    with tempfile.TemporaryFile(dir=existing):
      pass
  except OSError as e:
    what = path if existing == path else f"{path} (nor create it in {existing})"
    raise ConfigError(field, f"expected a writable directory, cannot write to {what}: {e.strerror}") from None


def _kind(path: pathlib.Path) -> str:
  if path.is_symlink() and not path.exists():
    return "broken symbolic link"
  return "regular file" if path.is_file() else "special file (not a directory)"


def base_config() -> ml_collections.ConfigDict:
  """The defaults as the ConfigDict config files start from (the built-in environment, the
  tiny model, the paper's PPO constants)."""
  return schema.to_config_dict(RunConfig())


def _migrate(values: dict[str, Any]) -> dict[str, Any]:
  """Configs saved before `data.env` became `env` and `reward.granularity`/`weighting` became
  `reward.placement` (old checkpoints, `model.init_from` an old run) read as they meant."""
  values = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in values.items()}
  data = values.get("data")
  if isinstance(data, dict) and "env" in data:
    values["env"] = {**data.pop("env"), **values.get("env", {})}
  reward = values.get("reward")
  if isinstance(reward, dict) and "granularity" in reward:
    granularity, weighting = reward.pop("granularity"), reward.pop("weighting", "paper")
    reward["placement"] = {"final": "final_only", "summed": "summed"}.get(granularity, weighting)
  return values


def parse_run_config(config: Mapping[str, Any] | ml_collections.ConfigDict) -> RunConfig:
  """The typed, checked run config of a ConfigDict (or of the JSON saved with a checkpoint).

  Raises:
    ConfigError: naming the first bad field (`ppo.vf_coef: expected ...`).
  """
  values = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
  return schema.from_config_dict(RunConfig, _migrate(values))


def apply_paper_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """StepTool's published PPO hyperparameters, for the 7-8B models of the paper.

  lr 1e-5; batch 8 in minibatches of 2 with 4 accumulation steps; 4 PPO epochs over each
  batch; adaptive KL (init 0.3, target 6, horizon 10000); gamma 0.99, lambda 0.95; clip
  0.2, value clip 0.2, vf coef 0.1; 5 epochs over the data; LoRA r 8 / alpha 16; context
  4096, response 1024; bf16 compute with float32 trainable weights. `model.path` (a local
  Hugging Face directory) is required. The sizes are global: on a mesh whose batch axes
  (data x fsdp) have more than 2 devices, raise `batch.minibatch_size` (and `batch.size`)
  to a multiple of them, or put the devices on the tensor axis (the default here).

  The PPO, KL, optimizer and batch constants are the schema's defaults (the paper's); this
  sets what differs from the tiny default.
  """
  config.model.require_path = True
  config.model.preset = ""
  config.tokenizer = ""  # the model's own
  config.model.param_dtype = "bfloat16"
  config.model.compute_dtype = "bfloat16"
  config.model.remat = "full"
  config.model.logits_chunk = 1024
  config.model.lora.enabled = True
  config.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": 1, "tensor": -1})
  config.data.max_context_len = 4096
  config.data.min_bucket_len = 1024
  config.checkpoint.every_steps = 50
  return config
