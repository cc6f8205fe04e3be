"""The episode API: prompts, observations, and a defined outcome for every kind of bad input."""

import json

import pytest
from hypothesis import given, settings, strategies as st

from steptool_jax.data import render
from steptool_jax.envs import episode as env
from steptool_jax.envs.react import format_action
from steptool_jax.envs.tasks import generate_tasks
from steptool_jax.envs.tools import TOOLS


@pytest.fixture(scope="module")
def task():
  # A flight-price-in-currency task: search flights, convert, Finish.
  return next(t for t in generate_tasks(60, seed=1)["train"] if t.template == "cheapest_flight_in_currency")


def _search(task):
  p = task.params
  return format_action("search_flights_for_flight_search", json.dumps(
      {"origin": p["origin"], "destination": p["destination"], "sort_by": "price", "limit": 1}), "search")


def _error(observation):
  return json.loads(observation)["error"]


def test_reset_gives_the_toolllama_preamble(task):
  episode, prompt = env.reset(task)
  assert prompt.startswith("System:\n") and prompt.endswith(f"User:\n{task.query}\nBegin!\n\nAssistant:\n")
  for name in task.tool_names:
    assert f"- {name}(" in prompt
  assert not episode.done and episode.num_steps == 0


def test_a_good_call_then_finish(task):
  episode, prompt0 = env.reset(task)
  action0 = _search(task)
  after, result = env.step(episode, action0)
  assert episode.num_steps == 0  # episodes are values: the old one is unchanged
  assert result.outcome == env.CALLED and not result.done
  flights = json.loads(result.observation)["response"]["flights"]
  assert len(flights) == 1 and result.prompt == f"Function:\n{result.observation}\nAssistant:\n"
  action1 = format_action("Finish", json.dumps({"return_type": "give_answer", "final_answer": "ok"}))
  done, final = env.step(after, action1)
  assert final.done and final.outcome == env.ANSWERED and final.prompt is None
  trajectory = done.trajectory()
  assert [c.name for c in trajectory.calls] == ["search_flights_for_flight_search"]
  assert trajectory.final_answer.final_answer == "ok"
  # The episode's text is exactly the rendered step-grained row.
  prompts, responses = render.render_steps(trajectory, "toolllama", system_prompt=env.system_prompt(task))
  assert prompts == (prompt0, result.prompt) and responses == (action0, action1)


@pytest.mark.parametrize("action, outcome, message", [
    ("I do not know what to do.", env.INVALID_ACTION, "expected a line 'Action:"),
    ("Action: search_flights_for_flight_search\nAction Input: {'origin': 'Paris'}", env.INVALID_ACTION,
     "not valid JSON"),
    ("Action: search_flights_for_flight_search\nAction Input: {\"q\": \"" + "x" * 3000 + "\"}",
     env.INVALID_ACTION, "longer than"),
    ("Action: book_flight_for_travel\nAction Input: {}", env.UNKNOWN_TOOL, "no such function"),
    ("Action: get_hotel_details_for_hotel_finder_x\nAction Input: {}", env.UNKNOWN_TOOL, "no such function"),
    ("Action: Finish\nAction Input: {\"return_type\": \"maybe\"}", env.INVALID_FINISH, "return_type"),
    ("Action: Finish\nAction Input: {\"return_type\": \"give_answer\"}", env.INVALID_FINISH, "final_answer"),
    ("Action: search_flights_for_flight_search\nAction Input: {}", env.CALLED, "missing required argument"),
])
def test_bad_actions_are_failed_steps_with_an_error_observation(task, action, outcome, message):
  episode, _ = env.reset(task)
  episode, result = env.step(episode, action)
  assert result.outcome == outcome and not result.done
  assert message in _error(result.observation)
  assert result.prompt.startswith("Function:\n") and result.prompt.endswith("Assistant:\n")
  assert len(episode.calls) == 1 and episode.calls[0].response == result.observation
  assert episode.actions == (action,)


def test_tools_not_offered_by_the_task_are_unknown(task):
  not_offered = next(name for name in TOOLS if name not in task.tool_names)
  episode, _ = env.reset(task)
  _, result = env.step(episode, format_action(not_offered, "{}"))
  assert result.outcome == env.UNKNOWN_TOOL


def test_give_up_ends_the_episode(task):
  episode, _ = env.reset(task)
  episode, result = env.step(episode, format_action("Finish", '{"return_type": "give_up_and_restart"}'))
  assert result.done and result.outcome == env.GAVE_UP and episode.trajectory().final_answer.gave_up


def test_actions_after_finish_are_ignored(task):
  episode, _ = env.reset(task)
  finished, _ = env.step(episode, format_action("Finish", '{"return_type": "give_answer", "final_answer": "x"}'))
  again, result = env.step(finished, _search(task))
  assert again is finished
  assert result.done and result.outcome == env.AFTER_DONE and result.prompt is None
  assert "episode is over" in _error(result.observation)


def test_episodes_that_never_finish_stop_at_the_step_limit(task):
  episode, _ = env.reset(task, env.EnvConfig(max_steps=3))
  outcomes = []
  while not episode.done:
    episode, result = env.step(episode, _search(task))
    outcomes.append(result.outcome)
  assert outcomes == [env.CALLED, env.CALLED, env.STEP_LIMIT]
  assert episode.step_limit_reached and episode.finish is None
  trajectory = episode.trajectory()
  assert trajectory.num_steps == 3 and trajectory.final_answer is None


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(max_size=200) | st.sampled_from([
    "Action: Finish\nAction Input: {}", "Action: Finish\nAction Input: {\"return_type\": \"give_answer\", "
    "\"final_answer\": \"x\"}", "Action: calculate_for_calculator\nAction Input: {\"expression\": \"9**99\"}",
    "Thought: hmm\nAction:  \n", "Action: x\nAction Input: null"]), min_size=1, max_size=12))
def test_no_sequence_of_texts_makes_step_raise(task, actions):
  episode, _ = env.reset(task, env.EnvConfig(max_steps=8))
  for action in actions:
    episode, result = env.step(episode, action)
    json.loads(result.observation or "{}")
    assert result.done == episode.done
    assert (result.prompt is None) == result.done
  assert episode.num_steps <= 8
