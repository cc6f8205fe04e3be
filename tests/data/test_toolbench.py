"""ToolBench converted answers: reading the reference file, the chain, the round trip."""

import json

from steptool_jax.data.annotations import read_reward_annotations
from steptool_jax.data.records import FINISH, GIVE_ANSWER, ToolCall, ToolSpec, Trajectory
from steptool_jax.data.toolbench import read_converted_answers, write_converted_answers

ANSWERS = "converted_answers_G123.json"


def test_reads_the_reference_file(reference_dir):
  trajectories = {t.query_id: t for t in read_converted_answers(reference_dir / ANSWERS)}
  assert list(trajectories) == ["32980", "70195", "44426", "34459", "56543"]
  roster = trajectories["44426"]
  assert roster.query.startswith("I am a football fan")
  assert roster.method == "DFS_woFilter_w2"
  assert [call.name for call in roster.calls] == ["team_roster_for_national_football_players"]
  assert roster.calls[0].arguments == '{"team":"NE"}'
  assert roster.calls[0].response.startswith('{"error": "", "response": [{"player": "Adrian Phillips"')
  assert roster.finish.name == FINISH and roster.num_steps == 2
  assert roster.final_answer.return_type == GIVE_ANSWER
  assert roster.final_answer.final_answer.startswith("Here is the roster of the New England Patriots:\n\n1.")
  assert roster.tool_names[-1] == FINISH and len(roster.tools) == 7
  assert roster.tools[0].parameters["properties"]["team"]["type"] == "string"
  # total_steps in the file counts the system and user nodes too.
  assert [t.num_steps for t in trajectories.values()] == [5, 3, 2, 3, 3]


def test_finish_without_return_type_counts_as_an_answer(reference_dir):
  trajectories = {t.query_id: t for t in read_converted_answers(reference_dir / ANSWERS)}
  final = trajectories["34459"].final_answer
  assert not final.gave_up
  assert final.final_answer.startswith("The current exchange rate for Bitcoin in USD is $11,103.09.")


def test_writer_reproduces_the_reference_json(reference_dir, tmp_path):
  trajectories = read_converted_answers(reference_dir / ANSWERS)
  out = tmp_path / "answers.json"
  assert write_converted_answers(out, trajectories) == 5
  assert json.loads(out.read_text(encoding="utf-8")) == json.loads((reference_dir / ANSWERS).read_text(encoding="utf-8"))
  assert read_converted_answers(out) == trajectories


def test_annotations_describe_the_same_calls(reference_dir):
  trajectories = {t.query_id: t for t in read_converted_answers(reference_dir / ANSWERS)}
  for annotation in read_reward_annotations(reference_dir / "reward_annotation_G123.json"):
    trajectory = trajectories[annotation.query_id]
    assert [(c.name, c.arguments) for c in annotation.calls] == [(c.name, c.arguments) for c in trajectory.calls]
    assert annotation.finish.arguments == trajectory.finish.arguments


def test_thoughts_and_missing_finish_round_trip(tmp_path):
  trajectory = Trajectory(
      query_id="9", query="weather?", tools=(ToolSpec("w", "weather", {"type": "object"}),),
      calls=(ToolCall("w", '{"city": "Paris"}', '{"error": "", "response": "sunny"}', thought="Look it up."),
             ToolCall("w", "{}", '{"error": "bad", "response": ""}')),
      finish=None, method="CoT")
  path = tmp_path / "a.json"
  write_converted_answers(path, [trajectory])
  record = json.loads(path.read_text(encoding="utf-8"))["9"]
  chain = []
  nodes = record["answer"]["answer_details"]
  while nodes:
    chain.append(nodes[0]["role"])
    nodes = nodes[0]["next"]
  assert chain == ["system", "user", "assistant", "tool", "tool"]
  assert record["answer"]["total_steps"] == 5 and record["answer"]["final_answer"] == ""
  assert read_converted_answers(path) == [trajectory]
