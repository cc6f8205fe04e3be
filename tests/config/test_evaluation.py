"""The evaluation config: its defaults parse to the dataclass, bad values name their field,
and a training run's `data` and `env` sections read into it unchanged (evaluate --workdir)."""

from __future__ import annotations

import json

import pytest

from steptool_jax.config import schema
from steptool_jax.config.evaluation import (EvalConfig, EvalSection, PolicySection, evaluation_defaults,
                                            parse_eval_config)
from steptool_jax.config.run import MAX_SEED, RunConfig
from steptool_jax.config.schema import ConfigError


def _error(values) -> str:
  with pytest.raises(ConfigError) as info:
    parse_eval_config(values)
  return str(info.value)


def test_defaults_parse_to_the_dataclass():
  assert parse_eval_config(evaluation_defaults()) == EvalConfig()
  assert parse_eval_config({}) == EvalConfig()


def test_a_typed_config_is_returned_as_it_is():
  config = EvalConfig(eval=EvalSection(split="test"))
  assert parse_eval_config(config) is config


def test_overrides_are_typed_and_checked():
  config = evaluation_defaults()
  config.eval.split = "test"
  config.eval.max_episodes = 5
  config.policy.kind = "expert"
  config.env.max_steps = 4
  parsed = parse_eval_config(config)
  assert (parsed.eval.split, parsed.eval.max_episodes, parsed.policy.kind, parsed.env.max_steps) == (
      "test", 5, "expert", 4)


@pytest.mark.parametrize("values, message", [
    ({"eval": {"splt": "test"}}, "eval.splt: unknown config field; did you mean 'eval.split'?"),
    ({"polcy": {}}, "polcy: unknown config field; did you mean 'policy'?"),
    ({"eval": {"split": "dev"}}, "eval.split: expected one of ('train', 'validation', 'test'), found 'dev'"),
    ({"eval": {"top_p": 0.0}}, "eval.top_p: expected a number in (0, 1], found 0.0"),
    ({"eval": {"batch_size": 0}}, "eval.batch_size: expected a positive number, found 0"),
    ({"eval": {"temperature": -0.1}}, "eval.temperature: expected a non-negative number, found -0.1"),
    ({"policy": {"kind": "gguf"}}, "policy.kind: expected one of ('hf', 'checkpoint', 'random', 'expert',"
                                   " 'give_up'), found 'gguf'"),
    ({"policy": {"expert_mistake_rate": 1.5}}, "policy.expert_mistake_rate: expected a number in [0, 1], found 1.5"),
    ({"policy": {"seed": -1}}, f"policy.seed: expected an integer in [0, {MAX_SEED}], found -1"),
    ({"policy": {"seed": True}}, "policy.seed: expected an integer, found True"),
    ({"env": {"max_steps": 0}}, "env.max_steps: expected a positive number, found 0"),
    ({"data": {"template": "chatml2"}}, "data.template: expected one of"),
])
def test_bad_values_name_their_field(values, message):
  assert _error(values).startswith(message)


@pytest.mark.parametrize("kind, message", [
    ("hf", "policy.path: required for policy.kind='hf' (a Hugging Face directory or GGUF file)"),
    ("checkpoint", "policy.path: required for policy.kind='checkpoint' (a run directory of ours)"),
])
def test_model_policies_need_a_path(kind, message):
  with pytest.raises(ConfigError) as info:
    PolicySection(kind=kind).check_path()
  assert str(info.value) == message
  PolicySection(kind=kind, path="/somewhere").check_path()


@pytest.mark.parametrize("kind", ["random", "expert", "give_up"])
def test_other_policies_need_no_path(kind):
  PolicySection(kind=kind).check_path()


def test_a_training_runs_data_and_env_sections_read_into_an_evaluation():
  """What `evaluate --workdir=RUN` does with the run's saved config: the same sections."""
  run = schema.replace(RunConfig(), env__num_tasks=37, env__max_steps=4, env__unfinished_reward=-1.0,
                       env__templates="city_population,daily_weather", data__template="llama3",
                       data__max_context_len=200)
  saved = json.loads(json.dumps(schema.to_plain(run)))
  evaluation = parse_eval_config({"data": saved["data"], "env": saved["env"], "policy": {"kind": "checkpoint"}})
  assert evaluation.env == run.env and evaluation.data == run.data
  assert type(evaluation.env) is type(run.env)


@pytest.mark.parametrize("field, value, message", [
    ("eval.seed", 2**70, f"eval.seed: expected an integer in [0, 2147483647], found {2**70}"),
    ("eval.seed", -3, "eval.seed: expected an integer in [0, 2147483647], found -3"),
    ("policy.seed", 2**31, "policy.seed: expected an integer in [0, 2147483647], found 2147483648"),
    ("env.seed", 2**40, f"env.seed: expected an integer in [0, 2147483647], found {2**40}"),
    ("policy.expert_mistake_rate", float("nan"), "policy.expert_mistake_rate: expected a finite number, found nan"),
])
def test_seeds_and_rates_are_checked_at_start(field, value, message):
  config = evaluation_defaults()
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(ValueError) as info:
    parse_eval_config(config)
  assert str(info.value) == message
