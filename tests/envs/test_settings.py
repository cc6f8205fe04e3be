"""The environment's settings section: bad values name their field, and its tasks, episode
config and judge are the environment's own functions called with these settings."""

from __future__ import annotations

import json
import math

import pytest

from steptool_jax.config import schema
from steptool_jax.config.schema import ConfigError
from steptool_jax.data.records import ToolCall, Trajectory
from steptool_jax.envs import episode, judge
from steptool_jax.envs.settings import EnvSettings
from steptool_jax.envs.tasks import generate_tasks


def _error(**values) -> str:
  with pytest.raises(ConfigError) as info:
    EnvSettings(**values)
  return str(info.value)


def test_the_defaults_are_valid():
  assert schema.from_config_dict(EnvSettings, {}) == EnvSettings()


@pytest.mark.parametrize("values, message", [
    ({"max_steps": -1}, "max_steps: expected a positive number, found -1"),
    ({"max_steps": 0}, "max_steps: expected a positive number, found 0"),
    ({"num_tasks": 0}, "num_tasks: expected a positive number, found 0"),
    ({"mistake_rate": 1.5}, "mistake_rate: expected a number in [0, 1], found 1.5"),
    ({"mistake_rate": -0.1}, "mistake_rate: expected a number in [0, 1], found -0.1"),
    ({"unfinished_reward": math.nan}, "unfinished_reward: expected a finite number, found nan"),
    ({"unfinished_reward": -math.inf}, "unfinished_reward: expected a finite number, found -inf"),
    ({"templates": "city_population, no_such_template"},
     "templates: unknown templates ['no_such_template']; expected some of ['cheapest_flight', "),
    ({"test_entities": "all"}, "test_entities: expected one of ('unseen', 'seen'), found 'all'"),
    ({"validation_fraction": 1.0}, "validation_fraction: expected a number in [0, 1), found 1.0"),
    ({"validation_fraction": 0.5, "test_fraction": 0.5},
     "test_fraction: expected validation_fraction + test_fraction < 1 (train needs tasks), found 0.5 + 0.5"),
    ({"contribution": "llm"}, "contribution: expected one of ('answer_overlap', 'reference'), found 'llm'"),
    ({"contribution_threshold": 2.0}, "contribution_threshold: expected a number in [0, 1], found 2.0"),
    ({"alpha": -1.0}, "alpha: expected a non-negative number, found -1.0"),
])
def test_bad_values_name_their_field(values, message):
  assert _error(**values).startswith(message)


def test_within_a_run_config_the_field_is_prefixed_with_env():
  from steptool_jax.config.run import RunConfig  # noqa: PLC0415
  with pytest.raises(ConfigError) as info:
    schema.from_config_dict(RunConfig, {"env": {"max_steps": -1}})
  assert str(info.value) == "env.max_steps: expected a positive number, found -1"


def test_template_names():
  assert EnvSettings().template_names == ()
  assert EnvSettings(templates=" city_population,, daily_weather ,").template_names == (
      "city_population", "daily_weather")


def test_tasks_are_generate_tasks_with_these_settings():
  settings = EnvSettings(num_tasks=30, seed=7, templates="city_population,daily_weather,rain_total",
                         hold_out_templates=True, test_entities="seen", validation_fraction=0.2, test_fraction=0.2,
                         quote_entities=True)
  direct = generate_tasks(30, 7, templates=("city_population", "daily_weather", "rain_total"),
                          hold_out_templates=True, quote_entities=True, test_entities="seen",
                          validation_fraction=0.2, test_fraction=0.2)
  assert settings.tasks() == direct
  assert {split: len(tasks) for split, tasks in direct.items()} == {"train": 18, "validation": 6, "test": 6}
  # ... and the settings matter: another seed gives other tasks.
  assert EnvSettings(num_tasks=30, seed=8, templates=settings.templates, test_entities="seen",
                     validation_fraction=0.2, test_fraction=0.2, quote_entities=True).tasks() != direct


def test_all_templates_when_none_are_named():
  assert EnvSettings(num_tasks=20, seed=1).tasks() == generate_tasks(20, 1)


def test_episode_config():
  assert EnvSettings(max_steps=3, tool_descriptions=False).episode_config("llama3") == episode.EnvConfig(
      max_steps=3, template="llama3", tool_descriptions=False)


@pytest.mark.parametrize("settings", [
    EnvSettings(),
    EnvSettings(alpha=3.0, contribution_threshold=0.9, unfinished_reward=-1.0),
    EnvSettings(contribution="reference", alpha=0.0, unfinished_reward=-0.5),
])
def test_judge_is_the_rule_judge_with_these_reward_settings(settings):
  task = generate_tasks(10, 0)["train"][0]
  call = ToolCall(task.relevant_tools[0], json.dumps({"city": "Paris"}), response=json.dumps(
      {"error": "", "response": {"population": 2148000}}))
  bad_call = ToolCall("no_such_tool", "{", response=json.dumps({"error": "no such function", "response": ""}))
  unfinished = Trajectory(query_id=task.task_id, query=task.query, tools=task.tools, calls=(call, bad_call),
                          finish=None)
  finish = ToolCall("Finish", json.dumps({"return_type": "give_answer", "final_answer": " ".join(task.gold_facts)}))
  finished = Trajectory(query_id=task.task_id, query=task.query, tools=task.tools, calls=(call,), finish=finish)
  for trajectory in (unfinished, finished):
    expected = judge.judge(task, trajectory, alpha=settings.alpha, threshold=settings.contribution_threshold,
                           contribution=settings.contribution, unfinished_reward=settings.unfinished_reward)
    assert settings.judge(task, trajectory) == expected
  # The unfinished episode's last step carries `unfinished_reward`.
  assert settings.judge(task, unfinished).step_rewards[-1] == settings.unfinished_reward
  if settings != EnvSettings():  # the settings reach the judge: they change its rewards
    assert settings.judge(task, unfinished).step_rewards != EnvSettings().judge(task, unfinished).step_rewards
