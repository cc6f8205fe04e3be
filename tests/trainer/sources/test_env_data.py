"""The environment's generated training data: made once per settings into the cache and reused,
never left half-written, and a lost race with another process is no error."""

from __future__ import annotations

import json
import os

import pytest

from steptool_jax.config import schema
from steptool_jax.config.run import RunConfig
from steptool_jax.envs.generate import GenerateConfig, generate
from steptool_jax.envs.settings import EnvSettings
from steptool_jax.trainer.sources import env_data

SMALL = GenerateConfig(env=EnvSettings(num_tasks=10, seed=4), template="toolllama", build_tfds=False)


def test_generate_config_of_a_run():
  run = schema.replace(RunConfig(), env__num_tasks=12, env__mistake_rate=0.0, data__template="llama3")
  assert env_data.generate_config(run) == GenerateConfig(env=run.env, template="llama3", build_tfds=False)


def test_the_directory_is_named_by_the_settings(tmp_path):
  target = env_data.env_data_dir(tmp_path, SMALL)
  assert target.parent == tmp_path and target.name.startswith("env-") and len(target.name) == len("env-") + 16
  assert env_data.env_data_dir(tmp_path, SMALL) == target  # deterministic
  others = [GenerateConfig(env=EnvSettings(num_tasks=11, seed=4), template="toolllama", build_tfds=False),
            GenerateConfig(env=EnvSettings(num_tasks=10, seed=4, mistake_rate=0.5), template="toolllama",
                           build_tfds=False),
            GenerateConfig(env=EnvSettings(num_tasks=10, seed=4), template="qwen2", build_tfds=False)]
  assert len({env_data.env_data_dir(tmp_path, c) for c in others} | {target}) == 4


def test_generated_once_then_reused(tmp_path, monkeypatch):
  made = env_data.ensure_env_data(tmp_path, SMALL)
  assert made == env_data.env_data_dir(tmp_path, SMALL)
  assert env_data.step_grained_file(made) == made / "step_grained" / "train.tsv"
  assert env_data.sft_file(made, "validation") == made / "sft" / "validation.json"
  assert env_data.step_grained_file(made).is_file() and env_data.sft_file(made).is_file()
  summary = json.loads((made / "summary.json").read_text())
  assert summary["config"]["env"]["num_tasks"] == 10
  assert [p.name for p in tmp_path.iterdir()] == [made.name]  # no scratch directory left behind
  mtime = (made / "summary.json").stat().st_mtime_ns

  def must_not_run(*args, **kwargs):
    raise AssertionError("generated again")
  monkeypatch.setattr(env_data, "generate", must_not_run)
  assert env_data.ensure_env_data(tmp_path, SMALL) == made
  assert (made / "summary.json").stat().st_mtime_ns == mtime


def test_a_failed_generation_leaves_nothing(tmp_path, monkeypatch):
  def fails(out_dir, config):
    (out_dir / "step_grained").mkdir()
    (out_dir / "step_grained" / "train.tsv").write_text("half")
    raise OSError("disk full")
  monkeypatch.setattr(env_data, "generate", fails)
  with pytest.raises(OSError, match="disk full"):
    env_data.ensure_env_data(tmp_path, SMALL)
  assert list(tmp_path.iterdir()) == []


def test_a_lost_race_returns_the_winners_data(tmp_path, monkeypatch):
  """Another process finishes first: its complete directory is used, ours is discarded."""
  target = env_data.env_data_dir(tmp_path, SMALL)

  def slow_generate(out_dir, config):
    generate(out_dir, config)
    target.mkdir()  # the winner renames its complete directory into place meanwhile
    (target / "summary.json").write_text('{"winner": true}')
    (target / "other").write_text("x")  # not empty: our rename cannot replace it
  monkeypatch.setattr(env_data, "generate", slow_generate)
  assert env_data.ensure_env_data(tmp_path, SMALL) == target
  assert json.loads((target / "summary.json").read_text()) == {"winner": True}
  assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_an_incomplete_directory_is_not_reused(tmp_path):
  """A directory without summary.json (not ours: renames are atomic) is not taken as the data."""
  target = env_data.env_data_dir(tmp_path, SMALL)
  target.mkdir()
  (target / "partial").write_text("x")
  with pytest.raises(OSError):
    env_data.ensure_env_data(tmp_path, SMALL)
  assert not (target / "summary.json").exists()
  assert sorted(os.listdir(tmp_path)) == [target.name]
