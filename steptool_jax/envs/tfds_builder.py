"""A TFDS builder over the generated files, in array_record format (no TensorFlow needed).

Two configs: `step_grained` (one example per episode: prompts, responses, step rewards
and the verdict) and `sft` (one example per SFT conversation: the turns and their
rendered `(text, is_action)` segments). Examples keep the order of the generated files.

Build with `build(generated_dir)` (the `generate` CLI does it) and read without
TensorFlow through the random-access data source:

  import tensorflow_datasets as tfds
  source = tfds.builder_from_directory(f"{dir}/tfds/steptool_env/step_grained/1.0.0").as_data_source()
  source["train"][0]   # {"query_id": b"train-000000", "prompts": [...], ...}

(`tfds.data_source("steptool_env/step_grained", data_dir=f"{dir}/tfds")` works too once
this module is imported; `tfds.load` needs TensorFlow and is not used.)
"""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from steptool_jax.data.sft import read_sft_conversations
from steptool_jax.data.tsv import read_step_grained_tsv
from steptool_jax.envs.tasks import SPLITS

NAME = "steptool_env"
CONFIGS = ("step_grained", "sft")


def _read_jsonl(path: pathlib.Path) -> list[dict[str, Any]]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


class SteptoolEnv(tfds.core.GeneratorBasedBuilder):
  """The built-in environment's expert data (generate it first; it is read from `manual_dir`)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="step_grained", description="Step-grained PPO rows with rule rewards."),
      tfds.core.BuilderConfig(name="sft", description="SFT conversations of solved episodes."),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Run `python -m steptool_jax.envs generate --out=DIR` and pass DIR."
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS 4.9 locates a builder defined in a package through `importlib_resources`, a
    # backport it only installs on Python < 3.9; naming this file avoids that import.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    if self.builder_config.name == "step_grained":
      features = {
          "query_id": tfds.features.Text(), "generalization": tfds.features.Text(),
          "status": tfds.features.Text(),
          "prompts": tfds.features.Sequence(tfds.features.Text()),
          "responses": tfds.features.Sequence(tfds.features.Text()),
          "rewards": tfds.features.Sequence(np.float32),
      }
    else:
      features = {
          "id": tfds.features.Text(), "query_id": tfds.features.Text(), "template": tfds.features.Text(),
          "roles": tfds.features.Sequence(tfds.features.Text()),
          "contents": tfds.features.Sequence(tfds.features.Text()),
          "segments": tfds.features.Sequence(tfds.features.Text()),
          "is_action": tfds.features.Sequence(np.bool_),
      }
    # disable_shuffling: keep the generated (deterministic) order of the examples.
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features),
                                 description=__doc__.split("\n\n")[0], disable_shuffling=True)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    source = pathlib.Path(dl_manager.manual_dir)
    generate = self._step_grained if self.builder_config.name == "step_grained" else self._sft
    return {split: generate(source, split) for split in SPLITS if self._has_examples(source, split)}

  def _has_examples(self, source: pathlib.Path, split: str) -> bool:
    if self.builder_config.name == "step_grained":
      return bool(_read_jsonl(source / "episodes" / f"{split}.jsonl"))
    return bool(_read_jsonl(source / "sft" / f"{split}.rendered.jsonl"))

  def _step_grained(self, source: pathlib.Path, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    rows = read_step_grained_tsv(source / "step_grained" / f"{split}.tsv")
    episodes = _read_jsonl(source / "episodes" / f"{split}.jsonl")
    if len(rows) != len(episodes):
      raise ValueError(f"{source}: {len(rows)} TSV rows but {len(episodes)} episodes in split {split}")
    for row, record in zip(rows, episodes):
      yield record["task_id"], {
          "query_id": record["task_id"], "generalization": record["generalization"],
          "status": record["status"], "prompts": list(row.prompts), "responses": list(row.responses),
          "rewards": np.asarray(row.rewards, np.float32)}

  def _sft(self, source: pathlib.Path, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    conversations = read_sft_conversations(source / "sft" / f"{split}.json")
    rendered = _read_jsonl(source / "sft" / f"{split}.rendered.jsonl")
    if len(conversations) != len(rendered):
      raise ValueError(f"{source}: {len(conversations)} conversations but {len(rendered)} rendered in {split}")
    for conversation, record in zip(conversations, rendered):
      yield conversation.id, {
          "id": conversation.id, "query_id": conversation.query_id, "template": record["template"],
          "roles": [turn.role for turn in conversation.turns],
          "contents": [turn.content for turn in conversation.turns],
          "segments": [text for text, _ in record["segments"]],
          "is_action": np.asarray([is_action for _, is_action in record["segments"]], np.bool_)}

  # TFDS needs this abstract method; the split generators above do the work.
  def _generate_examples(self, **kwargs):
    raise NotImplementedError("examples are generated per split by _split_generators")


def build(generated_dir: str | pathlib.Path, *, configs: tuple[str, ...] = CONFIGS) -> pathlib.Path:
  """Prepares the TFDS datasets under `generated_dir/tfds`; returns that data dir."""
  generated_dir = pathlib.Path(generated_dir)
  data_dir = generated_dir / "tfds"
  if data_dir.exists():  # TFDS would silently reuse a stale build
    shutil.rmtree(data_dir)
  download_config = tfds.download.DownloadConfig(manual_dir=str(generated_dir))
  for config in configs:
    builder = SteptoolEnv(config=config, data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(download_config=download_config)
  return data_dir


def data_sources(generated_dir: str | pathlib.Path, config: str) -> dict[str, Any]:
  """The split -> random-access source mapping of a built dataset (no TensorFlow)."""
  path = pathlib.Path(generated_dir) / "tfds" / NAME / config / str(SteptoolEnv.VERSION)
  return tfds.builder_from_directory(str(path)).as_data_source()
