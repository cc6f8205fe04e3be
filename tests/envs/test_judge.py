"""Rule judging: facts in answers, IsSolved, tool recall, step rewards."""

import pytest

from steptool_jax.data.records import AnswerStatus, ToolCall, Trajectory
from steptool_jax.envs import judge
from steptool_jax.envs.tasks import Task


@pytest.mark.parametrize("fact, answer, present", [
    ("128.74", "That is 128.74 EUR.", True),
    ("128.74", "That is 128.7 EUR.", True),         # correctly rounded, 0.03% off
    ("128.74", "That is 129 EUR.", True),           # rounded to whole euros, 0.2% off
    ("128.74", "That is 128.75 EUR.", False),       # wrong in the written precision
    ("128.74", "That is 12874 EUR.", False),
    ("1.9833", "It takes 1.98 h.", True),
    ("1.9833", "It takes 2 h.", False),             # 0.8% off: too coarse
    ("0.012005", "One INR buys 0.01 USD.", False),  # 17% off
    ("0.012005", "One INR buys 0.012005 USD.", True),
    ("11991384", "There are 11,991,384 more people.", True),
    ("11991384", "There are 11991383 more people.", False),
    ("21", "A high of 21 C.", True),
    ("21", "A high of -21 C.", False),
    ("317", "Flight AZ317 leaves at 9.", False),    # digits inside a word are not a number
    ("LH3452", "take lh3452 tomorrow", True),
    ("LH3452", "take LH34521 tomorrow", False),
    ("partly cloudy", "It will be Partly  Cloudy.", True),
    ("São Paulo", "In sao paulo today", True),
    ("showers", "no rain", False),
])
def test_fact_in_answer(fact, answer, present):
  assert judge.fact_in_answer(fact, answer) is present


def _task(gold=("LH3452", "128.74"), relevant=("search_flights_for_flight_search",
                                                "convert_currency_for_currency_exchange")):
  return Task(task_id="t-1", split="test", generalization="seen", template="cheapest_flight_in_currency",
              query="q", params={}, gold_facts=gold, relevant_tools=relevant, tools=())


def _trajectory(answer=None, return_type="give_answer", calls=()):
  finish = None
  if answer is not None:
    import json
    finish = ToolCall("Finish", json.dumps({"return_type": return_type, "final_answer": answer}))
  return Trajectory(query_id="t-1", query="q", tools=(), calls=tuple(calls), finish=finish)


def test_answer_status():
  task = _task()
  assert judge.answer_status(task, _trajectory("LH3452 costs 128.74 EUR")) is AnswerStatus.SOLVED
  assert judge.answer_status(task, _trajectory("LH3452 costs 130 EUR")) is AnswerStatus.UNSURE
  assert judge.answer_status(task, _trajectory("no idea")) is AnswerStatus.UNSOLVED
  assert judge.answer_status(task, _trajectory("LH3452 128.74", return_type="give_up_and_restart")) is (
      AnswerStatus.UNSOLVED)
  assert judge.answer_status(task, _trajectory(None)) is AnswerStatus.UNSOLVED


def test_is_solved_source_plugs_the_gold_facts_into_the_annotator():
  source = judge.is_solved_source([_task()])
  assert source(_trajectory("LH3452 costs 128.74 EUR")) is AnswerStatus.SOLVED
  assert source(_trajectory("LH3452")) is AnswerStatus.UNSURE
  with pytest.raises(KeyError):
    source(Trajectory(query_id="other", query="q", tools=(), calls=(), finish=None))


def test_tool_recall_counts_relevant_tools_called():
  task = _task()
  calls = [ToolCall("search_flights_for_flight_search", "{}", '{"error": "x", "response": ""}'),
           ToolCall("get_city_facts_for_city_info", "{}", "")]
  assert judge.tool_recall(task, _trajectory("a", calls=calls)) == 0.5
  assert judge.tool_recall(task, _trajectory("a")) == 0.0


def test_judge_step_rewards_follow_the_rules():
  """SC and Contribution per call, (SC + Con) / 2 with alpha = 1, then IsSolved."""
  task = _task(gold=("LH3452",), relevant=("search_flights_for_flight_search",))
  useful = ToolCall("search_flights_for_flight_search", "{}",
                    '{"error": "", "response": {"flight_number": "LH3452", "price_usd": 139.94}}')
  unrelated = ToolCall("get_city_facts_for_city_info", "{}",
                       '{"error": "", "response": {"city": "Oslo", "country": "Norway", "population": 709037}}')
  failed = ToolCall("calculate_for_calculator", "{", '{"error": "the Action Input is not valid JSON", "response": ""}')
  trajectory = _trajectory("Take LH3452: flight_number LH3452, price_usd 139.94.", calls=[useful, unrelated, failed])
  verdict = judge.judge(task, trajectory)
  assert verdict.status is AnswerStatus.SOLVED
  assert verdict.succ_calling == (1, 1, 0)
  # useful: SC 1, Con 1 -> 1.0; unrelated: SC 1, Con 0 -> 0.5; failed: 0; final: Solved -> 1.
  assert verdict.step_rewards == (1.0, 0.5, 0.0, 1.0)
  assert verdict.tool_recall == 1.0


def test_an_unfinished_episode_ends_on_the_unfinished_reward():
  """No Finish (the step limit): the last action is the final step and gets
  `unfinished_reward` instead of its intermediate reward; the others keep theirs."""
  task = _task(gold=("LH3452",), relevant=("search_flights_for_flight_search",))
  useful = ToolCall("search_flights_for_flight_search", "{}",
                    '{"error": "", "response": {"flight_number": "LH3452", "price_usd": 139.94}}')
  unrelated = ToolCall("get_city_facts_for_city_info", "{}",
                       '{"error": "", "response": {"city": "Oslo", "country": "Norway", "population": 709037}}')
  unfinished = _trajectory(None, calls=[unrelated, useful])
  # alpha = 1: each successful call earns SC / 2 = 0.5 (no answer to contribute to).
  assert judge.judge(task, unfinished).step_rewards == (0.5, 0.0)
  assert judge.judge(task, unfinished, unfinished_reward=-1.0).step_rewards == (0.5, -1.0)
  # Against the reference solution: the useful call would earn (1 + 1) / 2 = 1 if it were not last.
  by_reference = judge.judge(task, _trajectory(None, calls=[useful, unrelated]), contribution="reference",
                             unfinished_reward=-0.5, alpha=0.0)
  assert by_reference.step_rewards[-1] == -0.5 and len(by_reference.step_rewards) == 2
  # A finished episode is not touched by the setting.
  finished = _trajectory("Take LH3452.", calls=[useful])
  assert judge.judge(task, finished, unfinished_reward=-1.0).step_rewards == judge.judge(task, finished).step_rewards
  assert judge.judge(task, _trajectory(None), unfinished_reward=-1.0).step_rewards == ()


def test_summarize():
  solved = judge.Judgement("a", "seen", AnswerStatus.SOLVED, (1.0,), (1,), 1.0)
  unsure = judge.Judgement("b", "unseen_templates", AnswerStatus.UNSURE, (0.5,), (1, 0), 0.5)
  summary = judge.summarize([solved, unsure])
  assert summary["pass_rate"] == 0.5 and summary["mean_is_solved"] == 0.75
  assert summary["tool_recall"] == 0.75 and summary["failed_call_rate"] == pytest.approx(1 / 3)
  assert summary["pass_rate_by_group"] == {"seen": 1.0, "unseen_templates": 0.0}
