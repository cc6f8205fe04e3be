"""The built-in environment's training data, generated once into a cache directory.

When a config names no data file, the trainers use the step-grained TSV (PPO) or the SFT
conversations made by the environment's scripted expert (`steptool_jax.envs.generate`).
Generation is a pure function of its settings and takes seconds, so the files are made on
first use under `cache_dir/env-<hash of the settings>/` and reused afterwards. A run
writes into a temporary directory and renames it into place, so a crash never leaves a
half-written cache and two processes racing for it both end up with a complete one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import tempfile

import ml_collections

from steptool_jax.envs.generate import GenerateConfig, generate


def generate_config(config: ml_collections.ConfigDict) -> GenerateConfig:
  """The environment settings of a run (`data.env.*`, `data.template`) as a `GenerateConfig`:
  what the expert data is made with, and what online rollouts play (tasks, text, judge)."""
  env = config.data.env
  return GenerateConfig(
      num_tasks=env.num_tasks, seed=env.seed, mistake_rate=env.mistake_rate, template=config.data.template,
      max_steps=env.max_steps, build_tfds=False, templates=template_names(env.templates),
      hold_out_templates=env.hold_out_templates, quote_entities=env.quote_entities, tool_descriptions=env.tool_descriptions, thoughts=env.thoughts,
      contribution=env.contribution, alpha=env.alpha, unfinished_reward=env.unfinished_reward,
      test_entities=env.test_entities, validation_fraction=env.validation_fraction, test_fraction=env.test_fraction)


def template_names(templates: str) -> tuple[str, ...]:
  """`data.env.templates`: comma-separated template names ("" = all of them)."""
  return tuple(name.strip() for name in templates.split(",") if name.strip())


def env_data_dir(cache_dir: str | os.PathLike[str], config: GenerateConfig) -> pathlib.Path:
  """Where the data of `config` lives (it may not exist yet)."""
  key = hashlib.sha256(json.dumps(dataclasses.asdict(config), sort_keys=True).encode()).hexdigest()[:16]
  return pathlib.Path(cache_dir) / f"env-{key}"


def ensure_env_data(cache_dir: str | os.PathLike[str], config: GenerateConfig) -> pathlib.Path:
  """The generated data directory for `config`, generating it if it is not there yet."""
  target = env_data_dir(cache_dir, config)
  if (target / "summary.json").is_file():
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  scratch = pathlib.Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
  try:
    generate(scratch, config)
    try:
      os.rename(scratch, target)
    except OSError:
      if not (target / "summary.json").is_file():  # not a lost race: a real failure
        raise
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  return target


def step_grained_file(data_dir: pathlib.Path, split: str = "train") -> pathlib.Path:
  return data_dir / "step_grained" / f"{split}.tsv"


def sft_file(data_dir: pathlib.Path, split: str = "train") -> pathlib.Path:
  return data_dir / "sft" / f"{split}.json"
