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

from absl import logging

from steptool_jax.config.run import RunConfig
from steptool_jax.envs.generate import GenerateConfig, generate


def generate_config(config: RunConfig) -> GenerateConfig:
  """What the expert data of a run is made with: its env section, rendered in its chat template."""
  return GenerateConfig(env=config.env, template=config.data.template, build_tfds=False)


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
  logging.info("generating the environment's data into %s", target)
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
