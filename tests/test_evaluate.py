"""`python -m steptool_jax.evaluate`: scripted policies with known outcomes, a tiny random
model end to end, the CLI's output contract."""

import json
import pathlib
import subprocess
import sys

import pytest

from configs import evaluate as evaluate_config
from steptool_jax import evaluate
from steptool_jax.data.errors import DataError
from steptool_jax.data.toolbench import read_converted_answers
from steptool_jax.envs import judge
from steptool_jax.envs.generate import GenerateConfig, roll_out
from steptool_jax.envs.settings import EnvSettings
from steptool_jax.envs.tasks import generate_tasks
from steptool_jax.rollout.policies import text_policy
from steptool_jax.rollout.scripted import GIVE_UP_ACTION
from tests.rollout.tiny_policy import MAX_BATCH, MAX_CONTEXT_LEN, MAX_NEW_TOKENS, builtin_tokenizer, tiny_policy
from tests.trainer.fixtures import compile_cache, data_cache  # noqa: F401 (fixtures)

REPO = pathlib.Path(__file__).resolve().parents[1]


def config(variant=None, **overrides):
  c = evaluate_config.get_config(variant)
  c.env.num_tasks = 200
  c.eval.max_episodes = 12
  c.update_from_flattened_dict(overrides)
  return c


def test_always_correct_expert_passes_everything():
  summary = evaluate.run(config("expert", **{"eval.split": "test"}))
  assert summary["episodes"] == 12 and summary["split"] == "test"
  assert summary["pass_rate"] == 1.0 and summary["solved_rate"] == 1.0 and summary["tool_recall"] == 1.0
  assert summary["pass_rate_ci"] == [1.0, 1.0] and summary["failed_call_rate"] == 0.0
  assert summary["status_counts"] == {"Solved": 12, "Unsure": 0, "Unsolved": 0}


def test_always_give_up_passes_nothing():
  summary = evaluate.run(config("give_up"))
  assert summary["pass_rate"] == 0.0 and summary["tool_recall"] == 0.0 and summary["steps"] == 1.0
  assert summary["failed_call_rate"] is None  # no calls to rate
  # One action per episode: the give-up text's tokens and the EOS the evaluation config adds.
  assert summary["generated_tokens"] == 12 * (len(builtin_tokenizer().encode(GIVE_UP_ACTION)) + 1)


def test_garbage_counts_as_failed_calls():
  c = config(**{"env.max_steps": 3})
  tokenizer = builtin_tokenizer()
  garbage = text_policy(lambda episode: "Action: ???\nAction Input: {oops", tokenizer)
  result = evaluate.evaluate_policy(evaluate.load_tasks(c), garbage, tokenizer, evaluate.rollout_settings(c, tokenizer))
  m = result.metrics
  assert m["pass_rate"]["mean"] == 0.0 and m["steps"]["mean"] == 3.0
  assert m["failed_call_rate"]["mean"] == 1.0 and m["failed_call_rate"]["n"] == 12
  assert m["status_counts"]["Unsolved"] == 12


def test_expert_with_mistakes_matches_the_environments_own_judging():
  """A 30%-mistake expert: our metrics equal the environment's judge summary of the same
  episodes played by its data generator (an independent loop)."""
  summary = evaluate.run(config("expert", **{"policy.expert_mistake_rate": 0.3, "eval.max_episodes": 0}))
  tasks = generate_tasks(200, seed=0)["validation"]
  reference = roll_out(tasks, GenerateConfig(EnvSettings(mistake_rate=0.3, seed=0), template="toolllama"))
  expected = judge.summarize(e.judgement for e in reference)
  assert summary["episodes"] == len(tasks) == 20
  assert summary["pass_rate"] == pytest.approx(expected["mean_is_solved"])
  assert summary["solved_rate"] == pytest.approx(expected["pass_rate"])
  assert summary["tool_recall"] == pytest.approx(expected["tool_recall"])
  assert summary["failed_call_rate"] == pytest.approx(expected["failed_call_rate"])
  assert summary["steps"] == pytest.approx(sum(e.run.episode.num_steps for e in reference) / 20)
  assert 0 < summary["pass_rate"] < 1 and summary["pass_rate_ci"][0] < summary["pass_rate"] < summary["pass_rate_ci"][1]


def test_tiny_random_model_end_to_end(tmp_path):
  c = config("random", **{"eval.max_episodes": MAX_BATCH, "eval.batch_size": MAX_BATCH, "eval.temperature": 1.0,
                          "eval.width_bucket": MAX_CONTEXT_LEN, "data.max_context_len": MAX_CONTEXT_LEN,
                          "data.max_response_len": MAX_NEW_TOKENS, "env.max_steps": 2,
                          "output_dir": str(tmp_path)})
  summary = evaluate.run(c, policy=tiny_policy())
  assert summary["episodes"] == MAX_BATCH and summary["pass_rate"] == 0.0
  trajectories = read_converted_answers(tmp_path / "answers.json")  # external evaluators can read it
  assert [t.query_id for t in trajectories] == [t.task_id for t in evaluate.load_tasks(c)]
  episodes = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
  assert len(episodes) == MAX_BATCH and all(e["status"] == "Unsolved" for e in episodes)
  for trajectory, episode in zip(trajectories, episodes):
    assert trajectory.num_steps == episode["num_steps"] == len(episode["stops"])
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  assert metrics["summary"]["episodes"] == MAX_BATCH and "by_template" in metrics["metrics"]


@pytest.mark.parametrize("reuse", [True, False])
def test_eval_reuse_cache_reaches_the_acting_policy(reuse):
  acting = evaluate.build_policy(config("random", **{"eval.reuse_cache": reuse}), builtin_tokenizer(), tiny_policy())
  assert acting.reuse_cache is reuse


def test_bad_config_values_name_the_field():
  with pytest.raises(ValueError, match="eval.split"):
    evaluate.load_tasks(config(**{"eval.split": "dev"}))
  with pytest.raises(ValueError, match="policy.path"):
    evaluate.run(config())  # kind=hf without a path
  with pytest.raises(ValueError, match="policy.kind"):
    evaluate.build_policy(config(**{"policy.kind": "oracle"}), builtin_tokenizer())
  with pytest.raises(ValueError, match="max_position_embeddings"):
    evaluate.build_policy(config("random", **{"data.max_context_len": 4096}), builtin_tokenizer(), tiny_policy())
  with pytest.raises(ValueError, match="unknown variant"):
    evaluate_config.get_config("oracle")


def test_cli_last_line_is_the_json_summary(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "steptool_jax.evaluate", "--config=configs/evaluate.py:give_up",
       "--config.env.num_tasks=200", "--config.eval.max_episodes=3", "--config.eval.split=test",
       f"--config.output_dir={tmp_path}"],
      cwd=REPO, capture_output=True, text=True, timeout=120, env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
  assert result.returncode == 0, result.stderr[-2000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert {"pass_rate", "tool_recall", "episodes", "split"} <= set(summary)
  assert summary["episodes"] == 3 and summary["split"] == "test" and summary["pass_rate"] == 0.0
  assert len(read_converted_answers(tmp_path / "answers.json")) == 3
  # Progress on stderr: the give-up policy ends all 3 episodes in round 1 of the environment's 10.
  assert "3/3" in result.stderr and "round 1/10" in result.stderr, result.stderr[-2000:]


def test_hf_directory_policy_acts_like_the_policy_it_was_saved_from(tmp_path):
  from steptool_jax.models.pretrained import save_pretrained  # noqa: PLC0415
  save_pretrained(tiny_policy(), tmp_path / "hf", dtype="float32")
  builtin_tokenizer().save_pretrained(tmp_path / "hf")  # an exported model carries its tokenizer
  overrides = {"eval.max_episodes": MAX_BATCH, "eval.batch_size": MAX_BATCH, "eval.width_bucket": MAX_CONTEXT_LEN,
               "data.max_context_len": MAX_CONTEXT_LEN, "data.max_response_len": MAX_NEW_TOKENS,
               "env.max_steps": 2}
  from_dir = evaluate.run(config(**overrides, **{"policy.path": str(tmp_path / "hf"),
                                                 "output_dir": str(tmp_path / "a")}))
  in_memory = evaluate.run(config("random", **overrides, output_dir=str(tmp_path / "b")), policy=tiny_policy())
  assert from_dir["episodes"] == in_memory["episodes"] == MAX_BATCH
  # Greedy decoding of the same weights: the same actions, step for step.
  assert (tmp_path / "a" / "answers.json").read_text() == (tmp_path / "b" / "answers.json").read_text()


def test_a_run_directory_of_ours_is_evaluated_with_its_own_settings(tmp_path, data_cache, compile_cache):  # noqa: F811
  """One SFT step of configs/tiny.py:sft, then `policy.kind=checkpoint` on its workdir: the
  run's tokenizer, data pipeline and task split settings replace the evaluation config's."""
  from steptool_jax import train  # noqa: PLC0415
  from tests.trainer.fixtures import tiny_run_config  # noqa: PLC0415
  import jax  # noqa: PLC0415
  run = tiny_run_config(data_cache, "sft", train__num_steps=1, log__tensorboard=False,
                        data__max_context_len=MAX_CONTEXT_LEN - MAX_NEW_TOKENS, data__max_response_len=MAX_NEW_TOKENS,
                        env__max_steps=2, data__eos_after_actions=True)
  train.train_and_evaluate(run, tmp_path / "run", devices=jax.devices()[:1])
  c = config(**{"policy.kind": "checkpoint", "policy.path": str(tmp_path / "run"), "eval.max_episodes": MAX_BATCH,
                "eval.batch_size": MAX_BATCH, "eval.width_bucket": MAX_CONTEXT_LEN, "output_dir": str(tmp_path / "ev")})
  settled = evaluate.with_run_settings(c)
  assert (settled.env.num_tasks, settled.env.max_steps, settled.data.eos_after_actions) == (40, 2, True)
  assert settled.data.max_context_len == MAX_CONTEXT_LEN - MAX_NEW_TOKENS and settled.tokenizer == "builtin"
  summary = evaluate.run(c)
  assert summary["episodes"] == MAX_BATCH and summary["split"] == "validation"
  tasks = generate_tasks(40, seed=0)["validation"][:MAX_BATCH]
  trajectories = read_converted_answers(tmp_path / "ev" / "answers.json")
  assert [t.query_id for t in trajectories] == [t.task_id for t in tasks]
  assert all(1 <= t.num_steps <= 2 for t in trajectories)


def test_a_tasks_file_is_read_strictly_and_a_bad_line_is_named(tmp_path):
  tasks = generate_tasks(40, 0)["validation"][:3]
  path = tmp_path / "validation.jsonl"
  path.write_text("".join(json.dumps(task.to_json()) + "\n" for task in tasks))
  assert evaluate.load_tasks(config(**{"eval.tasks_file": str(path)})) == list(tasks)
  path.write_text(json.dumps(tasks[0].to_json()) + "\n" + json.dumps(tasks[0].to_json()) + "\n")
  with pytest.raises(DataError) as info:  # evaluate's main exits 2 with this line
    evaluate.load_tasks(config(**{"eval.tasks_file": str(path)}))
  assert str(info.value).startswith(f"{path}:2: task_id: expected each task id once")
