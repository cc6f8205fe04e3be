"""Shared set-up of the trainer tests: a persistent compilation cache, cached env data, tiny configs.

The tests call the jitted updates and `train_and_evaluate` several times with the same
shapes; each call builds a new jitted function, so without the persistent cache every run
would recompile (~10 s each on 2 CPU cores). With it, identical programs compile once.
"""

from __future__ import annotations

import pathlib

import jax
import ml_collections
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def compile_cache() -> pathlib.Path:
  """The run's persistent XLA compilation cache (tests/conftest.py: one for both workers and
  every subprocess), so repeated runs of the same program compile once."""
  return pathlib.Path(jax.config.jax_compilation_cache_dir)


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> pathlib.Path:
  """One cache directory for generated environment data and tokenised datasets."""
  return tmp_path_factory.mktemp("steptool-data-cache")


def tiny_run_config(data_cache: pathlib.Path, variant: str = "", **overrides) -> ml_collections.ConfigDict:
  """configs/tiny.py at test size: 40 tasks (32 training rows), 128-token rows, batch 4
  (2 micro-batches of 2), 2 PPO epochs, whitened advantages, 4 steps, a checkpoint every 2 steps."""
  from configs import tiny  # noqa: PLC0415

  config = tiny.get_config(variant)
  config.mesh = {"data": 1, "fsdp": 1, "tensor": 1}
  config.data.cache_dir = str(data_cache)
  config.env.num_tasks = 40
  config.data.max_context_len = 96
  config.data.max_response_len = 32
  config.data.min_bucket_len = 128
  config.batch.size = 4
  config.batch.minibatch_size = 2
  config.batch.grad_accum_steps = 2
  config.ppo.epochs = 2
  config.ppo.whiten_advantages = True  # test_train.py relies on a first-epoch surrogate of ~0
  config.train.num_steps = 4
  config.checkpoint.every_steps = 2
  config.log.progress_bar = False
  config.update_from_flattened_dict({name.replace("__", "."): value for name, value in overrides.items()})
  return config
