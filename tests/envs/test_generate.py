"""Dataset generation: files readable by the foundation readers, TFDS yields the same records,
deterministic, and the CLI."""

import dataclasses
import json
import sys

import pytest

from steptool_jax.data import render
from steptool_jax.data.records import AnswerStatus
from steptool_jax.data.sft import read_sft_conversations
from steptool_jax.data.toolbench import read_converted_answers
from steptool_jax.data.tsv import read_step_grained_tsv
from steptool_jax.envs import tfds_builder
from steptool_jax.envs.__main__ import main
from steptool_jax.envs.expert import Mistakes, run_expert
from steptool_jax.envs.generate import GenerateConfig, generate
from steptool_jax.envs.settings import EnvSettings
from steptool_jax.envs.tasks import SPLITS, Task

CONFIG = GenerateConfig(EnvSettings(num_tasks=40, seed=5, mistake_rate=0.3), template="toolllama")


@pytest.fixture(scope="module")
def out(tmp_path_factory):
  directory = tmp_path_factory.mktemp("generated")
  generate(directory, CONFIG)
  return directory


def _jsonl(path):
  return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _tasks(out, split):
  return [Task.from_json(record) for record in _jsonl(out / "tasks" / f"{split}.jsonl")]


def test_summary(out):
  summary = json.loads((out / "summary.json").read_text())
  assert {s: summary["splits"][s]["tasks"] for s in SPLITS} == {"train": 32, "validation": 4, "test": 4}
  for split in SPLITS:
    episodes = _jsonl(out / "episodes" / f"{split}.jsonl")
    solved = sum(e["status"] == "Solved" for e in episodes)
    assert summary["splits"][split]["pass_rate"] == solved / len(episodes)
    assert summary["splits"][split]["sft_conversations"] == solved


def test_step_grained_tsv_reads_back_with_the_rule_rewards(out):
  for split in SPLITS:
    rows = read_step_grained_tsv(out / "step_grained" / f"{split}.tsv")
    episodes = _jsonl(out / "episodes" / f"{split}.jsonl")
    tasks = _tasks(out, split)
    assert len(rows) == len(episodes) == len(tasks)
    for row, episode, task in zip(rows, episodes, tasks):
      assert row.num_steps == episode["num_steps"]
      assert list(row.rewards) == pytest.approx(episode["step_rewards"])
      assert row.prompts[0].startswith("System:\n") and task.query in row.prompts[0]
      # Replaying the expert gives the same actions: the file is what the env produced.
      replay = run_expert(task, mistakes=Mistakes(CONFIG.env.mistake_rate), seed=CONFIG.env.seed).episode
      assert row.responses == replay.actions
      if replay.finish is not None:  # the last reward is IsSolved
        assert row.rewards[-1] == AnswerStatus(episode["status"]).reward
      # A failed call (SuccCalling 0) never earns a positive intermediate reward.
      for sc, reward in zip(episode["succ_calling"], row.rewards):
        assert sc == 1 or reward == 0.0


def test_converted_answers_read_back(out):
  for split in SPLITS:
    trajectories = read_converted_answers(out / "answers" / f"{split}.json")
    tasks = _tasks(out, split)
    assert [t.query_id for t in trajectories] == [t.task_id for t in tasks]
    for trajectory, task in zip(trajectories, tasks):
      replay = run_expert(task, mistakes=Mistakes(CONFIG.env.mistake_rate), seed=CONFIG.env.seed).episode
      assert [c.name for c in trajectory.calls] == [c.name for c in replay.calls]
      assert [c.response for c in trajectory.calls] == [c.response for c in replay.calls]


def test_sft_conversations_read_back_and_match_the_step_text(out):
  for split in SPLITS:
    conversations = read_sft_conversations(out / "sft" / f"{split}.json")
    rendered = _jsonl(out / "sft" / f"{split}.rendered.jsonl")
    rows = {e["task_id"]: row for e, row in zip(_jsonl(out / "episodes" / f"{split}.jsonl"),
                                                read_step_grained_tsv(out / "step_grained" / f"{split}.tsv"))}
    assert len(conversations) == len(rendered)
    for conversation, record in zip(conversations, rendered):
      segments = [tuple(s) for s in record["segments"]]
      assert segments == list(render.render_conversation(conversation, "toolllama"))
      row = rows[conversation.query_id]
      step_text = "".join(p + r for p, r in zip(row.prompts, row.responses))
      assert "".join(text for text, _ in segments) == step_text
      assert [text for text, is_action in segments if is_action] == list(row.responses)


def test_tfds_data_sources_yield_the_same_records_without_tensorflow(out):
  step_grained = tfds_builder.data_sources(out, "step_grained")
  sft = tfds_builder.data_sources(out, "sft")
  for split in SPLITS:
    rows = read_step_grained_tsv(out / "step_grained" / f"{split}.tsv")
    episodes = _jsonl(out / "episodes" / f"{split}.jsonl")
    source = step_grained[split]
    assert len(source) == len(rows)
    for i, (row, episode) in enumerate(zip(rows, episodes)):
      record = source[i]
      assert record["query_id"].decode() == episode["task_id"]
      assert record["status"].decode() == episode["status"]
      assert [p.decode() for p in record["prompts"]] == list(row.prompts)
      assert [r.decode() for r in record["responses"]] == list(row.responses)
      assert [float(r) for r in record["rewards"]] == pytest.approx(list(row.rewards), abs=1e-6)
    conversations = read_sft_conversations(out / "sft" / f"{split}.json")
    if not conversations:
      assert split not in sft
      continue
    for i, conversation in enumerate(conversations):
      record = sft[split][i]
      assert record["id"].decode() == conversation.id
      assert [c.decode() for c in record["contents"]] == [t.content for t in conversation.turns]
      segments = render.render_conversation(conversation, "toolllama")
      assert [s.decode() for s in record["segments"]] == [text for text, _ in segments]
      assert [bool(a) for a in record["is_action"]] == [is_action for _, is_action in segments]
  assert "tensorflow" not in sys.modules


def test_same_configuration_same_bytes(out, tmp_path):
  generate(tmp_path, dataclasses.replace(CONFIG, build_tfds=False))
  for path in sorted(out.rglob("*")):
    relative = path.relative_to(out)
    if path.is_dir() or relative.parts[0] == "tfds" or relative.name == "summary.json":
      continue
    assert (tmp_path / relative).read_bytes() == path.read_bytes(), relative


def test_cli_generate(tmp_path, capsys):
  assert main(["generate", f"--out={tmp_path}", "--tasks=12", "--seed=1", "--mistake-rate=0.2",
               "--template=qwen2", "--no-tfds"]) == 0
  summary = json.loads(capsys.readouterr().out)
  assert summary["config"]["template"] == "qwen2" and summary["splits"]["train"]["tasks"] == 10
  row = read_step_grained_tsv(tmp_path / "step_grained" / "train.tsv")[0]
  assert row.prompts[0].startswith("<|im_start|>system\n")
  assert not (tmp_path / "tfds").exists()


@pytest.mark.parametrize("args", [["--mistake-rate=1.5"], ["--tasks=0"], ["--max-steps=0"]])
def test_cli_rejects_bad_arguments(tmp_path, capsys, args):
  assert main(["generate", f"--out={tmp_path}", "--no-tfds", *args]) == 2
  assert capsys.readouterr().err
