"""`python -m steptool_jax.evaluate` as 2 local processes: each plays half of the tasks, process
0 reports, and the report is the one a single process writes for the same config.

Two policies: the scripted expert with mistakes (a known outcome: the environment's own
judging of the same episodes, as in tests/test_evaluate.py) and a tiny model decoding
greedily (in batches of other sizes than one process forms: 2 + 2 episodes vs 4).
"""

from __future__ import annotations

import json
import sys

import pytest

from configs import evaluate as evaluate_config
from steptool_jax import evaluate
from steptool_jax.data.toolbench import read_converted_answers
from steptool_jax.envs import judge
from steptool_jax.envs.generate import GenerateConfig, roll_out
from steptool_jax.envs.settings import EnvSettings
from steptool_jax.envs.tasks import generate_tasks
from tests import local_launch
from tests.rollout.tiny_policy import MAX_CONTEXT_LEN, MAX_NEW_TOKENS, builtin_tokenizer, tiny_policy

OUTPUTS = ("answers.json", "episodes.jsonl")


@pytest.fixture(scope="module")
def launch_env(tmp_path_factory) -> dict[str, str]:
  return local_launch.environment(local_launch.shared_dir(tmp_path_factory, "jax-compile-cache-multiprocess"))


def evaluate_in_two_processes(variant: str | None, overrides: dict, output_dir, env) -> local_launch.Launched:
  config_arg = "--config=configs/evaluate.py" + (f":{variant}" if variant else "")
  command = [sys.executable, "-m", "steptool_jax.evaluate", config_arg, f"--config.output_dir={output_dir}",
             *(f"--config.{key}={value}" for key, value in overrides.items())]
  done = local_launch.launch(2, 1, command, env=env)
  assert done.returncode == 0, done.tail()
  return done


def the_json_line(done: local_launch.Launched) -> dict:
  """Process 0's summary; process 1 prints none."""
  assert not [line for line in done.lines(1) if line.startswith("{")]
  return json.loads(done.lines(0)[-1])


TIMINGS = ("seconds", "generated_tokens_per_s")  # the wall clock's; everything else must agree


def assert_same_report(two: dict, one: dict, two_dir, one_dir) -> None:
  assert {k: v for k, v in two.items() if k not in TIMINGS} == {k: v for k, v in one.items() if k not in TIMINGS}
  assert two["generated_tokens"] == one["generated_tokens"] > 0
  for name in OUTPUTS:
    assert (two_dir / name).read_text() == (one_dir / name).read_text(), name
  two_metrics, one_metrics = (json.loads((d / "metrics.json").read_text()) for d in (two_dir, one_dir))
  assert two_metrics["metrics"] == one_metrics["metrics"]


def test_the_expert_with_mistakes_across_two_processes(tmp_path, launch_env):
  overrides = {"env.num_tasks": 200, "eval.max_episodes": 0, "policy.expert_mistake_rate": 0.3}
  done = evaluate_in_two_processes("expert", overrides, tmp_path / "two", launch_env)
  two = the_json_line(done)
  assert any("process 1: played 10 of the 20 episodes" in line for line in done.lines(1, "stderr"))

  # The environment's own judging of the same episodes, played by its data generator.
  tasks = generate_tasks(200, seed=0)["validation"]
  reference = roll_out(tasks, GenerateConfig(EnvSettings(mistake_rate=0.3, seed=0), template="toolllama"))
  expected = judge.summarize(e.judgement for e in reference)
  assert two["episodes"] == len(tasks) == 20
  assert two["pass_rate"] == pytest.approx(expected["mean_is_solved"])
  assert two["tool_recall"] == pytest.approx(expected["tool_recall"])
  assert two["failed_call_rate"] == pytest.approx(expected["failed_call_rate"])
  assert 0 < two["pass_rate"] < 1
  assert [t.query_id for t in read_converted_answers(tmp_path / "two" / "answers.json")] == [t.task_id for t in tasks]

  c = evaluate_config.get_config("expert")
  c.update_from_flattened_dict({**overrides, "output_dir": str(tmp_path / "one")})
  assert_same_report(two, evaluate.run(c), tmp_path / "two", tmp_path / "one")


@pytest.mark.slow
def test_a_tiny_model_decoding_greedily_across_two_processes(tmp_path, launch_env):
  from steptool_jax.models.pretrained import save_pretrained  # noqa: PLC0415
  save_pretrained(tiny_policy(), tmp_path / "hf", dtype="float32")
  builtin_tokenizer().save_pretrained(tmp_path / "hf")
  overrides = {"policy.path": str(tmp_path / "hf"), "env.num_tasks": 200, "eval.max_episodes": 4,
               "eval.batch_size": 4, "eval.width_bucket": MAX_CONTEXT_LEN, "data.max_context_len": MAX_CONTEXT_LEN,
               "data.max_response_len": MAX_NEW_TOKENS, "env.max_steps": 2}
  two = the_json_line(evaluate_in_two_processes(None, overrides, tmp_path / "two", launch_env))
  assert two["episodes"] == 4 and two["policy"] == "hf"

  c = evaluate_config.get_config()
  c.update_from_flattened_dict({**overrides, "output_dir": str(tmp_path / "one")})
  assert_same_report(two, evaluate.run(c), tmp_path / "two", tmp_path / "one")
  # The episodes did something to compare: every one has actions of generated tokens.
  episodes = [json.loads(line) for line in (tmp_path / "one" / "episodes.jsonl").read_text().splitlines()]
  assert all(e["num_steps"] >= 1 and e["stops"] for e in episodes)
