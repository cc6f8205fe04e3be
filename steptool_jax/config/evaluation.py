"""The settings of an evaluation (`python -m steptool_jax.evaluate`), typed like a run's.

An evaluation shares the `data` section (the tokenisation the policy was trained with) and
the `env` section (tasks, splits, episode text, rewards) with training; for one of our run
directories (`policy.kind = "checkpoint"`) both are that run's own. Its own sections say
which policy acts (`policy`) and how it is evaluated (`eval`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import ml_collections

from steptool_jax.config import schema
from steptool_jax.config.run import DISTRIBUTED, DataSection
from steptool_jax.envs.settings import EnvSettings
from steptool_jax.envs.tasks import SPLITS

MODEL_KINDS = ("hf", "checkpoint", "random")
SCRIPTED_KINDS = ("expert", "give_up")
POLICY_KINDS = MODEL_KINDS + SCRIPTED_KINDS


@dataclasses.dataclass(frozen=True)
class PolicySection:
  """Which policy acts (`policy.*`).

  hf: a Hugging Face directory (ours via export, or any Llama-family model); checkpoint: a
  run directory of ours (python -m steptool_jax.train / sft --workdir): its latest policy,
  adapters merged, with that run's tokenizer, data and env sections; random: a randomly
  initialised `model_preset` (a floor, and smoke tests); expert / give_up: scripted
  references with known outcomes.
  """

  kind: str = "hf"
  path: str = ""
  model_preset: str = "tiny"
  expert_mistake_rate: float = 0.0
  seed: int = 0  # random init, and the expert's mistakes

  def __post_init__(self):
    schema.one_of("kind", self.kind, POLICY_KINDS)
    schema.number("expert_mistake_rate", self.expert_mistake_rate, low=0.0, high=1.0)
    schema.seed("seed", self.seed)

  def check_path(self) -> None:
    if self.kind in ("hf", "checkpoint") and not self.path:
      what = "a Hugging Face directory or GGUF file" if self.kind == "hf" else "a run directory of ours"
      raise schema.ConfigError("policy.path", f"required for policy.kind={self.kind!r} ({what})")


@dataclasses.dataclass(frozen=True)
class EvalSection:
  """How the policy is evaluated (`eval.*`)."""

  split: str = "validation"  # train | validation | test
  tasks_file: str = ""  # a tasks/{split}.jsonl written with the data; overrides env.num_tasks/seed
  max_episodes: int = 0  # 0 = every task of the split
  batch_size: int = 32
  temperature: float = 0.0  # greedy
  top_p: float = 1.0
  seed: int = 0
  width_bucket: int = 128  # prompts are left-padded to a multiple of this (fewer compiles)
  reuse_cache: bool = True  # KV cache kept across an episode's turns (rollout.reuse_cache)

  def __post_init__(self):
    schema.one_of("split", self.split, SPLITS)
    schema.positive("max_episodes", self.max_episodes, allow_zero=True)
    schema.positive("batch_size", self.batch_size)
    schema.positive("temperature", self.temperature, allow_zero=True)
    schema.number("top_p", self.top_p, low=0.0, high=1.0, low_open=True)
    schema.positive("width_bucket", self.width_bucket)
    schema.seed("seed", self.seed)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """A whole evaluation."""

  policy: PolicySection = PolicySection()
  tokenizer: str = ""  # "" = the model's own (policy.path); "builtin"; or a tokenizer directory
  data: DataSection = DataSection()
  env: EnvSettings = EnvSettings()
  eval: EvalSection = EvalSection()
  output_dir: str = ""  # "" = print only; else answers.json, episodes.jsonl, metrics.json there
  # jax.distributed.initialize(), as in a run config: auto = when the environment names several processes
  # (each then plays its share of the tasks; process 0 reports).
  distributed: str = "auto"

  def __post_init__(self):
    schema.one_of("distributed", self.distributed, DISTRIBUTED)


def evaluation_defaults() -> ml_collections.ConfigDict:
  """The ConfigDict `configs/evaluate.py` starts from."""
  return schema.to_config_dict(EvalConfig())


def parse_eval_config(config: Mapping[str, Any] | ml_collections.ConfigDict | EvalConfig) -> EvalConfig:
  """The typed, checked evaluation config (a typed one is returned as it is)."""
  if isinstance(config, EvalConfig):
    return config
  values = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
  return schema.from_config_dict(EvalConfig, values)
