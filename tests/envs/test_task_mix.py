"""The environment's options for a tiny model's experiment: task mix, quoted entities, a
short system prompt, thought-free expert actions, and Contribution judged against the
reference solution. Defaults leave everything as it was."""

import collections
import json

import pytest

from steptool_jax.envs import episode as env
from steptool_jax.envs import expert, judge
from steptool_jax.envs.builtin_tokenizer import load_tokenizer
from steptool_jax.envs.generate import GenerateConfig, generate
from steptool_jax.envs.settings import EnvSettings
from steptool_jax.envs.tasks import HELD_OUT_TEMPLATES, SEEN, UNSEEN_ENTITIES, generate_tasks
from steptool_jax.rewards import rules

WEATHER = ("daily_weather", "high_in_fahrenheit", "rain_total")


def test_defaults_are_unchanged():
  assert generate_tasks(120, 4) == generate_tasks(120, 4, templates=None, hold_out_templates=True,
                                                  quote_entities=False)


def test_a_task_mix_without_held_out_templates():
  splits = generate_tasks(300, 0, templates=WEATHER, hold_out_templates=False)
  for split, tasks in splits.items():
    assert {t.template for t in tasks} <= set(WEATHER), split
  assert "rain_total" in {t.template for t in splits["train"]}  # held out by default, trained on here
  assert {t.generalization for t in splits["test"]} == {UNSEEN_ENTITIES}
  keys = [(t.template, json.dumps(t.params, sort_keys=True)) for tasks in splits.values() for t in tasks]
  assert len(keys) == len(set(keys))  # still no task in two splits
  # With held-out templates on, rain_total only appears in the test split.
  held = generate_tasks(300, 0, templates=WEATHER)
  assert "rain_total" not in {t.template for t in held["train"] + held["validation"]}
  assert {t.template for t in held["test"] if t.generalization != UNSEEN_ENTITIES} <= set(HELD_OUT_TEMPLATES)


def test_a_test_split_of_seen_entities():
  """test_entities="seen": the test split is drawn like validation (seen templates, seen cities,
  new parameters), disjoint from train and validation; train and validation are unchanged."""
  unseen = generate_tasks(300, 0, templates=WEATHER, hold_out_templates=False)
  seen = generate_tasks(300, 0, templates=WEATHER, hold_out_templates=False, test_entities="seen")
  assert seen["train"] == unseen["train"] and seen["validation"] == unseen["validation"]
  held_out_cities = {t.params["city"] for t in unseen["test"]}
  assert held_out_cities and not held_out_cities & {t.params["city"] for t in seen["test"]}
  assert {t.generalization for t in seen["test"]} == {SEEN} and len(seen["test"]) == 30
  keys = [(t.template, json.dumps(t.params, sort_keys=True)) for tasks in seen.values() for t in tasks]
  assert len(keys) == len(set(keys))
  sizes = generate_tasks(300, 0, templates=WEATHER, hold_out_templates=False, test_entities="seen",
                         validation_fraction=0.2, test_fraction=0.25)
  assert [len(sizes[s]) for s in ("train", "validation", "test")] == [165, 60, 75]


def test_bad_split_options_are_refused():
  with pytest.raises(ValueError, match="test_entities"):
    generate_tasks(50, 0, test_entities="held_out")
  with pytest.raises(ValueError, match="validation_fraction"):
    generate_tasks(50, 0, validation_fraction=1.5)
  with pytest.raises(ValueError, match="train needs tasks"):
    generate_tasks(50, 0, validation_fraction=0.5, test_fraction=0.5)


def test_bad_task_mixes_are_refused():
  with pytest.raises(ValueError, match="unknown"):
    generate_tasks(50, 0, templates=("weather_forecast",))
  with pytest.raises(ValueError, match="not held out"):
    generate_tasks(50, 0, templates=("rain_total",))


def test_quoted_entities_are_spelled_like_the_json_arguments():
  tokenizer = load_tokenizer()
  task = next(t for t in generate_tasks(200, 0, templates=WEATHER, quote_entities=True)["train"]
              if t.template == "daily_weather")
  city, day = task.params["city"], task.params["day"]
  assert f'"{city}"' in task.query and f'"{day}"' in task.query
  call = expert.run_expert(task, thoughts=False).episode.actions[0]
  for value in (city, day):
    quoted = tokenizer.encode(f' "{value}', add_special_tokens=False)  # the closing quote may merge with a comma
    query = tokenizer.encode(task.query, add_special_tokens=False)
    action = tokenizer.encode(call, add_special_tokens=False)
    assert _contains(query, quoted) and _contains(action, quoted), value
  # Unquoted, the query spells the city with a leading-space token the JSON never uses.
  plain = tokenizer.encode(f" {city}", add_special_tokens=False)
  assert not _contains(tokenizer.encode(call, add_special_tokens=False), plain)


def _contains(sequence, part):
  return any(sequence[i:i + len(part)] == part for i in range(len(sequence) - len(part) + 1))


def test_short_system_prompt_lists_signatures_only():
  task = generate_tasks(50, 0)["train"][0]
  full, short = env.system_prompt(task), env.system_prompt(task, tool_descriptions=False)
  assert len(short) < len(full)
  for tool in task.tools:
    assert tool.description in full and tool.description not in short
    assert f"- {tool.name}(" in short
  _, prompt = env.reset(task, env.EnvConfig(tool_descriptions=False))
  assert prompt.startswith("System:\n" + short)


def test_expert_without_thoughts_takes_the_same_steps():
  for task in generate_tasks(80, 2)["train"][:15]:
    with_thoughts = expert.run_expert(task, mistakes=expert.Mistakes(0.3), seed=1)
    bare = expert.run_expert(task, mistakes=expert.Mistakes(0.3), seed=1, thoughts=False)
    assert bare.mistakes == with_thoughts.mistakes
    assert [c.response for c in bare.episode.calls] == [c.response for c in with_thoughts.episode.calls]
    assert not any("Thought:" in action for action in bare.episode.actions)
    assert [expert.without_thought(a) for a in with_thoughts.episode.actions] == list(bare.episode.actions)


def test_reference_contribution_by_hand():
  """A wrong-city forecast whose numbers the answer repeats: by answer overlap it
  contributes (reward 1.0); against the reference solution it does not (0.5: it
  succeeded). A repeat of the right call contributes once."""
  task = next(t for t in generate_tasks(200, 0, templates=WEATHER, hold_out_templates=False)["train"]
              if t.template == "daily_weather")
  other = "Oslo" if task.params["city"] != "Oslo" else "Lima"
  right = f'Action: get_daily_forecast_for_weather\nAction Input: {{"city": "{task.params["city"]}", "day": "{task.params["day"]}"}}\n'
  wrong = right.replace(task.params["city"], other)
  episode, _ = env.reset(task)
  episode, wrong_result = env.step(episode, wrong)
  episode, _ = env.step(episode, right)
  episode, _ = env.step(episode, right)
  answer = rules.payload_text(json.loads(wrong_result.observation)["response"])  # repeats the wrong forecast
  episode, _ = env.step(episode, 'Action: Finish\nAction Input: ' + json.dumps(
      {"return_type": "give_answer", "final_answer": answer}) + "\n")
  trajectory = episode.trajectory()
  overlap = judge.judge(task, trajectory)
  reference = judge.judge(task, trajectory, contribution="reference")
  assert judge.reference_contributions(task, trajectory) == (0, 1, 0)
  assert reference.step_rewards == (0.5, 1.0, 0.5, overlap.step_rewards[-1])
  assert overlap.step_rewards[0] == 1.0  # the wrong call "contributed" to the (wrong) answer
  with pytest.raises(ValueError, match="contribution"):
    judge.judge(task, trajectory, contribution="llm")


def test_generate_applies_the_options(tmp_path):
  config = GenerateConfig(
      EnvSettings(num_tasks=60, seed=0, mistake_rate=0.2, templates=",".join(WEATHER), hold_out_templates=False,
                  quote_entities=True, tool_descriptions=False, thoughts=False, contribution="reference"),
      template="toolllama", build_tfds=False)
  summary = generate(tmp_path, config)
  assert summary["config"]["env"]["contribution"] == "reference"
  sft = json.loads((tmp_path / "sft" / "train.json").read_text())
  turns = [turn for record in sft.values() for turn in record["instances"][0]["conversations"]]
  assert not any("Thought:" in t["value"] for t in turns if t["from"] == "assistant")
  assert all(": " not in line for t in turns if t["from"] == "system" for line in t["value"].splitlines()[2:])
  templates = collections.Counter(json.loads(line)["template"]
                                  for line in (tmp_path / "tasks" / "train.jsonl").read_text().splitlines())
  assert set(templates) <= set(WEATHER)
