"""Judge reward annotations: the reference file, read field by field."""

from steptool_jax.data.annotations import read_reward_annotations, trajectory_from_annotation
from steptool_jax.data.records import AnswerStatus

ANNOTATIONS = "reward_annotation_G123.json"


def test_reads_the_reference_file(reference_dir):
  annotations = {a.query_id: a for a in read_reward_annotations(reference_dir / ANNOTATIONS)}
  assert list(annotations) == ["32980", "70195", "44426", "34459", "56543"]
  bandcamp = annotations["56543"]
  assert [run.succeed_tool_calling for run in bandcamp.runs] == [(0, 0), (0, 1), (0, 0)]
  assert [run.contributions for run in bandcamp.runs] == [(1, 2), (1, 3), (2, 3)]
  assert [run.status for run in bandcamp.runs] == [AnswerStatus.UNSURE, AnswerStatus.UNSOLVED, AnswerStatus.UNSURE]
  assert [call.name for call in bandcamp.calls] == ["get_album_details_for_bandamp_downloader_api",
                                                    "rojmusic_for_rojmusic"]
  assert bandcamp.calls[0].arguments == '{"url":"https://hammeredhulls.bandcamp.com/album/s-t"}'
  assert bandcamp.calls[0].response == '{"error": "", "response": ""}'
  assert bandcamp.finish.name == "Finish" and bandcamp.finish.response == ""
  assert bandcamp.tool_names[0] == "rojmusic_for_rojmusic" and len(bandcamp.tool_names) == 7
  roster = annotations["44426"]
  assert [run.status for run in roster.runs] == [AnswerStatus.UNSURE, AnswerStatus.SOLVED, AnswerStatus.SOLVED]
  assert roster.num_steps == 2


def test_trajectory_from_annotation(reference_dir):
  annotation = read_reward_annotations(reference_dir / ANNOTATIONS)[0]
  trajectory = trajectory_from_annotation(annotation)
  assert trajectory.query_id == "32980" and trajectory.num_steps == 5
  assert trajectory.tool_names == annotation.tool_names
  assert trajectory.final_answer.final_answer.startswith("**Ennio Morricone**\n- **Albums:**")
