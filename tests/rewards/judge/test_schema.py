"""The forced function's schema, and what counts as a valid judge answer."""

import json

import hypothesis
import hypothesis.strategies as st
import pytest

from steptool_jax.data.records import AnswerStatus, JudgeRun
from steptool_jax.rewards.judge.schema import JudgeOutputError, evaluation_tool, forced_tool_choice, \
    judge_run_from_arguments, judge_run_from_completion
from tests.rewards.judge.loopback import tool_call_completion

GOOD = {"succeed_tool_calling": [1, 0], "contribution_to_final_answer": [4, 0], "final_answer_status": "Unsure"}


def test_schema_pins_lengths_ranges_and_statuses():
  tool = evaluation_tool(3)
  assert tool["type"] == "function" and tool["function"]["name"] == "evaluate_process_reward"
  parameters = tool["function"]["parameters"]
  assert set(parameters["required"]) == {"succeed_tool_calling", "contribution_to_final_answer",
                                         "final_answer_status"}
  sc, con = parameters["properties"]["succeed_tool_calling"], parameters["properties"]["contribution_to_final_answer"]
  assert (sc["minItems"], sc["maxItems"], sc["items"]["maximum"]) == (3, 3, 1)
  assert (con["minItems"], con["maxItems"], con["items"]["minimum"], con["items"]["maximum"]) == (3, 3, 0, 5)
  assert parameters["properties"]["final_answer_status"]["enum"] == ["Solved", "Unsure", "Unsolved"]
  assert forced_tool_choice() == {"type": "function", "function": {"name": "evaluate_process_reward"}}


def test_a_good_answer_becomes_a_run():
  run = judge_run_from_completion(tool_call_completion(json.dumps({**GOOD, "reasoning": "ignored"})), 2)
  assert run == JudgeRun((1, 0), (4, 0), AnswerStatus.UNSURE)
  # Integral floats are integers; an empty trajectory (Finish only) has empty lists.
  assert judge_run_from_arguments({**GOOD, "contribution_to_final_answer": [4.0, 0]}, 2).contributions == (4, 0)
  assert judge_run_from_arguments(
      {"succeed_tool_calling": [], "contribution_to_final_answer": [], "final_answer_status": "Solved"}, 0
  ).status is AnswerStatus.SOLVED


@pytest.mark.parametrize("change, message", [
    ({"succeed_tool_calling": [1]}, "succeed_tool_calling: expected 2 entries (one per intermediate step), found 1"),
    ({"contribution_to_final_answer": [4, 0, 3]}, "contribution_to_final_answer: expected 2 entries"),
    ({"contribution_to_final_answer": [6, 0]}, "contribution_to_final_answer[0]: expected an integer 0..5, found int"),
    ({"contribution_to_final_answer": [4, -1]}, "contribution_to_final_answer[1]: expected an integer 0..5"),
    ({"succeed_tool_calling": [1, 2]}, "succeed_tool_calling[1]: expected an integer 0..1, found int 2"),
    ({"succeed_tool_calling": [True, 0]}, "succeed_tool_calling[0]: expected an integer 0..1, found bool True"),
    ({"contribution_to_final_answer": [2.5, 0]}, "contribution_to_final_answer[0]: expected an integer 0..5"),
    ({"contribution_to_final_answer": ["4", 0]}, "found str '4'"),
    ({"succeed_tool_calling": "1,0"}, "succeed_tool_calling: expected a list of 2 integers 0..1, found str"),
    ({"final_answer_status": "Maybe"}, "final_answer_status: expected one of Solved, Unsure, Unsolved, found str"),
    ({"final_answer_status": 1}, "final_answer_status: expected one of Solved, Unsure, Unsolved, found int 1"),
])
def test_bad_values_are_named(change, message):
  with pytest.raises(JudgeOutputError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
    judge_run_from_arguments({**GOOD, **change}, 2)


@pytest.mark.parametrize("key", sorted(GOOD))
def test_missing_keys_are_named(key):
  arguments = {k: v for k, v in GOOD.items() if k != key}
  with pytest.raises(JudgeOutputError, match=f"{key}: expected .* found it missing"):
    judge_run_from_arguments(arguments, 2)


@pytest.mark.parametrize("completion, message", [
    (tool_call_completion('{"succeed_tool_calling": [1, 0'), "arguments: expected a JSON object, found invalid JSON"),
    (tool_call_completion("[1, 0]"), "arguments: expected a JSON object, found list"),
    (tool_call_completion(json.dumps(GOOD), name="something_else"), "found a call of str 'something_else'"),
    ({"choices": [{"message": {"role": "assistant", "content": json.dumps(GOOD)}}]}, "found no tool call"),
    ({"choices": []}, "expected a chat completion with choices"),
    ({"error": "overloaded"}, "expected a chat completion with choices"),
])
def test_answers_without_a_valid_call_are_rejected(completion, message):
  with pytest.raises(JudgeOutputError, match=message.replace("[", r"\[")):
    judge_run_from_completion(completion, 2)


_values = st.one_of(st.none(), st.booleans(), st.integers(-2, 7), st.floats(-1, 6), st.just(float("nan")),
                    st.text(max_size=3), st.sampled_from(["Solved", "Unsure", "Unsolved", " Solved "]))


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(sc=st.one_of(_values, st.lists(_values, max_size=4)),
                  con=st.one_of(_values, st.lists(_values, max_size=4)), status=_values,
                  num_steps=st.integers(0, 3))
def test_any_answer_is_a_faithful_run_or_a_judge_output_error(sc, con, status, num_steps):
  arguments = {"succeed_tool_calling": sc, "contribution_to_final_answer": con, "final_answer_status": status}
  try:
    run = judge_run_from_arguments(arguments, num_steps)
  except JudgeOutputError:
    return
  # Accepted: exactly the values sent, every one in range, one per step (checked by a plain loop).
  assert len(run.succeed_tool_calling) == len(run.contributions) == num_steps
  for t in range(num_steps):
    assert run.succeed_tool_calling[t] == sc[t] and sc[t] in (0, 1) and not isinstance(sc[t], bool)
    assert run.contributions[t] == con[t] and 0 <= con[t] <= 5 and not isinstance(con[t], bool)
  assert run.status.value == status.strip()
