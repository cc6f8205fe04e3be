"""The judge prompt: template loading and what one trajectory's prompt says."""

import ast
import re

import pytest

from steptool_jax.data.errors import DataError
from steptool_jax.data.records import ToolCall, Trajectory
from steptool_jax.rewards.judge.prompt import load_prompt_template, render_judge_prompt

TRAJECTORY = Trajectory(
    query_id="7", query="What is the weather in Paris and in Rome?", tools=(),
    calls=(ToolCall("weather", '{"city": "Paris"}', '{"error": "", "response": "sunny, 21 C"}'),
           ToolCall("weather", '{"city": "Rome"}', '{"error": "", "response": "' + "r" * 50 + '"}')),
    finish=ToolCall("Finish", '{"return_type": "give_answer", "final_answer": "Paris: sunny. Rome: rain."}'))


def _steps(prompt):
  return [ast.literal_eval(line.split(": ", 1)[1]) for line in prompt.splitlines() if re.match(r"Step \d+: ", line)]


def test_packaged_prompt_states_the_three_rules_and_the_trajectory():
  prompt = render_judge_prompt(load_prompt_template(), TRAJECTORY, max_response_chars=1024)
  assert "What is the weather in Paris and in Rome?" in prompt
  assert "Paris: sunny. Rome: rain." in prompt  # the final answer text, not the Finish JSON
  assert "return_type" not in prompt
  for term in ("evaluate_process_reward", "succeed_tool_calling", "contribution_to_final_answer",
               "final_answer_status", "0 to 5", '"Solved"', '"Unsure"', '"Unsolved"', "exactly 2 entries"):
    assert term in prompt
  # Steps are numbered from 1, one line each, Finish excluded, fields verbatim.
  assert re.findall(r"^Step (\d+): ", prompt, flags=re.MULTILINE) == ["1", "2"]
  assert _steps(prompt) == [
      {"name": "weather", "arguments": '{"city": "Paris"}', "response": '{"error": "", "response": "sunny, 21 C"}'},
      {"name": "weather", "arguments": '{"city": "Rome"}', "response": '{"error": "", "response": "' + "r" * 50 + '"}'}]


def test_long_responses_are_cut_with_an_ellipsis():
  first_response = '{"error": "", "response": "sunny, 21 C"}'
  assert len(first_response) == 40
  first, second = _steps(render_judge_prompt(load_prompt_template(), TRAJECTORY, max_response_chars=40))
  assert first["response"] == first_response  # exactly at the limit: kept whole
  assert second["response"] == '{"error": "", "response": "rrrrrrrrrrrrr...'  # 40 characters, then ...


def test_give_up_no_finish_and_no_steps_are_said_in_words():
  template = load_prompt_template()
  gave_up = Trajectory("1", "q", (), TRAJECTORY.calls, ToolCall("Finish", '{"return_type": "give_up_and_restart"}'))
  assert "gave up" in render_judge_prompt(template, gave_up, max_response_chars=99)
  unfinished = Trajectory("2", "q", (), TRAJECTORY.calls, None)
  assert "without a final answer" in render_judge_prompt(template, unfinished, max_response_chars=99)
  direct = Trajectory("3", "q", (), (), TRAJECTORY.finish)
  prompt = render_judge_prompt(template, direct, max_response_chars=99)
  assert "called no tool" in prompt and "exactly 0 entries" in prompt and "Step 1:" not in prompt


def test_a_user_template_is_used_and_checked(tmp_path):
  mine = tmp_path / "mine.txt"
  mine.write_text("Q=$query | $num_steps steps | A=$final_answer | cost $$5\n$steps", encoding="utf-8")
  prompt = render_judge_prompt(load_prompt_template(str(mine)), TRAJECTORY, max_response_chars=99)
  assert prompt.startswith("Q=What is the weather in Paris and in Rome? | 2 steps | A=Paris: sunny. Rome: rain."
                           " | cost $5\nStep 1: {'name': 'weather'")
  for text, message in (("$query $final_answer", "expected a \\$steps placeholder"),
                        ("$query $steps $final_answer $tools", "found \\$tools"),
                        ("$query $steps $final_answer costs $5", "stray \\$")):
    mine.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=f"{mine}: template: .*{message}"):
      load_prompt_template(str(mine))
  with pytest.raises(DataError, match="missing.txt: file: expected a readable judge prompt template"):
    load_prompt_template(str(tmp_path / "missing.txt"))
