"""Every reader is total: any bytes give records or a DataError (exit 2), nothing else.

Random bytes, and random structural edits of the reference files and of files made by
`steptool_jax.envs.generate`, go through every reader (each format's reader reads every
file, not just its own), format detection, the `stats` command, the judge cache and the
tasks reader. Each
record that comes out must also be well formed (no silent garbage): a reader that accepts
a bool as a score or a NaN as a reward fails here, not later in training.
"""

import contextlib
import io
import math
import os
import pathlib
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st
import pytest

from steptool_jax.data import __main__ as data_cli
from steptool_jax.data.errors import DataError
from steptool_jax.data.formats import READERS, detect_format
from steptool_jax.data.records import ROLES, Conversation, RewardAnnotation, StepGrainedRow, Trajectory
from steptool_jax.data.stats import file_stats
from steptool_jax.envs.generate import GenerateConfig, generate
from steptool_jax.envs.settings import EnvSettings
from steptool_jax.envs.tasks import Task, read_tasks
from steptool_jax.rewards.judge.cache import RunCache

from tests.reliability import mutations

REFERENCE_FILES = {"converted_answers_G123.json": "json", "reward_annotation_G123.json": "json",
                   "sft_conversations_G123.json": "json", "toolllama_step_grained_for_ppo.tsv": "tsv"}
GENERATED_FILES = {"answers/train.json": "json", "sft/train.json": "json", "step_grained/train.tsv": "tsv",
                   "tasks/train.jsonl": "jsonl"}
RECORD_TYPES = {"tsv": StepGrainedRow, "converted_answers": Trajectory, "annotations": RewardAnnotation,
                "sft": Conversation}
EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def base_files(reference_dir, tmp_path_factory):
  """name -> (kind, text): the reference files (JSON ones cut to their first records, so that
  edits land on records often) and a small generated data set."""
  generated = tmp_path_factory.mktemp("generated")
  generate(generated, GenerateConfig(EnvSettings(num_tasks=20, seed=1, mistake_rate=0.3), template="toolllama",
                                            build_tfds=False))
  files = {}
  for root, names in ((reference_dir, REFERENCE_FILES), (generated, GENERATED_FILES)):
    for name, kind in names.items():
      text = (root / name).read_text(encoding="utf-8")
      if kind == "json":
        text = mutations.dump(mutations.first_records(text, 3))
      elif kind == "jsonl":
        text = "\n".join(text.split("\n")[:3]) + "\n"
      files[f"{root.name}/{name}"] = (kind, text)
  return files


def _check_record(fmt, record):
  """The invariants every accepted record of `fmt` holds."""
  assert isinstance(record, RECORD_TYPES[fmt]), type(record)
  if isinstance(record, StepGrainedRow):
    assert 0 < len(record.prompts) == len(record.responses) == len(record.rewards)
    assert all(isinstance(p, str) for p in record.prompts) and all(r.strip() for r in record.responses)
    assert all(type(r) is float and math.isfinite(r) for r in record.rewards)
  elif isinstance(record, RewardAnnotation):
    assert record.runs
    for run in record.runs:
      assert len(run.succeed_tool_calling) == len(run.contributions) == len(record.calls)
      assert all(type(s) is int and s in (0, 1) for s in run.succeed_tool_calling)
      assert all(type(c) is int and 0 <= c <= 5 for c in run.contributions)
  elif isinstance(record, Trajectory):
    calls = record.calls + ((record.finish,) if record.finish else ())
    assert all(isinstance(c.name, str) and c.name and isinstance(c.arguments, str) for c in calls)
    assert record.finish is None or record.finish.name == "Finish"
  else:
    assert record.turns and all(t.role in ROLES and isinstance(t.content, str) for t in record.turns)
    assert any(t.role == "assistant" for t in record.turns)


def assert_total(path):
  """Every reader of `path` gives records or DataErrors; detection, stats and the CLI likewise."""
  for fmt, reader in READERS.items():
    try:
      results = list(reader(path))
    except DataError:
      continue
    for result in results:
      if not isinstance(result, DataError):
        _check_record(fmt, result)
  for call in (lambda: detect_format(path), lambda: file_stats(path, skip_invalid=True), lambda: file_stats(path)):
    try:
      call()
    except DataError:
      pass
  with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
    code = data_cli.main(["stats", str(path)])
  assert code in (0, 2)
  if code == 2:
    assert err.getvalue().count("\n") == 1 and err.getvalue().startswith(str(path))
  try:
    RunCache(path).close()  # a torn or foreign cache file is counted, never fatal
  except DataError:
    pass
  try:
    tasks = read_tasks(path)
  except DataError:
    return
  assert all(isinstance(task, Task) and all(isinstance(f, str) for f in task.gold_facts) for task in tasks)


@contextlib.contextmanager
def _written(data: bytes, suffix: str):
  with tempfile.TemporaryDirectory() as directory:
    path = pathlib.Path(directory) / f"input{suffix}"
    path.write_bytes(data)
    yield path


@EXAMPLES
@given(st.binary(max_size=300), st.sampled_from([".tsv", ".json", ""]))
def test_random_bytes(data, suffix):
  with _written(data, suffix) as path:
    assert_total(path)


@EXAMPLES
@given(st.data())
def test_structural_edits_of_reference_and_generated_files(base_files, data):
  name = data.draw(st.sampled_from(sorted(base_files)))
  kind, text = base_files[name]
  if kind == "json":
    tree = mutations.parse(text)
    for _ in range(data.draw(st.integers(1, 3))):
      mutations.mutate_json(data.draw, tree)
    text = mutations.dump(tree)
  elif kind == "jsonl":
    trees = [mutations.parse(line) for line in text.splitlines()]
    for _ in range(data.draw(st.integers(1, 3))):
      mutations.mutate_json(data.draw, trees)
    text = "\n".join(mutations.dump(tree) for tree in trees) + "\n"
  else:
    rows = mutations.parse_tsv(text)
    for _ in range(data.draw(st.integers(1, 3))):
      mutations.mutate_tsv(data.draw, rows)
    text = mutations.dump_tsv(rows)
  raw = text.encode("utf-8", errors="surrogatepass")
  if data.draw(st.booleans()):
    raw = mutations.mutate_bytes(data.draw, raw)
  with _written(raw, {"tsv": ".tsv", "json": ".json", "jsonl": ".jsonl"}[kind]) as path:
    assert_total(path)


@EXAMPLES
@given(st.data())
def test_byte_edits_of_whole_reference_files(reference_dir, data):
  name = data.draw(st.sampled_from(sorted(REFERENCE_FILES)))
  raw = (reference_dir / name).read_bytes()
  for _ in range(data.draw(st.integers(1, 3))):
    raw = mutations.mutate_bytes(data.draw, raw)
  with _written(raw, os.path.splitext(name)[1]) as path:
    assert_total(path)


def test_the_unedited_files_are_read_whole(base_files, tmp_path):
  """The baseline of the edits above: each base file gives only records, of its format."""
  for name, (kind, text) in base_files.items():
    path = tmp_path / ("x.tsv" if kind == "tsv" else "x.json")
    path.write_text(text, encoding="utf-8")
    if kind == "jsonl":
      assert len(read_tasks(path)) == 3
      continue
    fmt = detect_format(path)
    results = list(READERS[fmt](path))
    assert results and not any(isinstance(r, DataError) for r in results), name
    for record in results:
      _check_record(fmt, record)
