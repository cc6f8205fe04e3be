"""HF checkpoint I/O without torch: block reads, round trips, the value head, bad checkpoints."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from steptool_jax.data.errors import DataError
from steptool_jax.models import load_pretrained, save_pretrained
from steptool_jax.models import hf_io
from tests.models.tiny_models import IDS, MASK, tiny_policy


class RecordingTensor:
  """A numpy array that remembers which index each read asked for."""

  def __init__(self, array: np.ndarray):
    self.array, self.reads = array, []

  def __getitem__(self, index):
    self.reads.append(index)
    return self.array[index]


def test_read_block_reads_only_the_shard_rows():
  heads, head_dim, embed = 4, 3, 5
  hf = np.arange(heads * head_dim * embed, dtype=np.float32).reshape(heads * head_dim, embed)
  tmap = hf_io.TensorMap(("q",), "q_proj.weight", perm=(1, 0), groups=(1, 2))
  ours = hf.T.reshape(embed, heads, head_dim)  # the documented layout, built by hand
  tensor = RecordingTensor(hf)
  index = (slice(1, 4), slice(2, 4), slice(None))  # embed 1..3, heads 2..3
  block = hf_io.read_block(tensor, tmap, ours.shape, index)
  np.testing.assert_array_equal(block, ours[1:4, 2:4, :])
  assert tensor.reads == [(slice(2 * head_dim, 4 * head_dim), slice(1, 4))]


def test_read_block_cuts_inner_axes_after_reading():
  hf = np.arange(6 * 4, dtype=np.float32).reshape(4, 6)  # o_proj: [embed=4, heads*head_dim=2*3]
  tmap = hf_io.TensorMap(("o",), "o_proj.weight", perm=(1, 0), groups=(2, 1))
  ours = hf.T.reshape(2, 3, 4)
  block = hf_io.read_block(RecordingTensor(hf), tmap, ours.shape, (slice(1, 2), slice(0, 2), slice(2, 4)))
  np.testing.assert_array_equal(block, ours[1:2, 0:2, 2:4])


def test_export_import_round_trip_is_exact(tmp_path):
  policy = tiny_policy()
  out = save_pretrained(policy, tmp_path / "export", dtype="float32", max_shard_bytes=30_000)
  index = json.loads((out / hf_io.INDEX_FILE).read_text())
  assert len(set(index["weight_map"].values())) > 1
  assert "model.layers.1.self_attn.q_proj.weight" in index["weight_map"]
  again = load_pretrained(out)
  assert again.config == policy.config
  jax.tree_util.tree_map(np.testing.assert_array_equal, again.variables, policy.variables)


def test_bf16_export_halves_the_file_and_loads(tmp_path):
  policy = tiny_policy()
  f32 = save_pretrained(policy, tmp_path / "f32", dtype="float32")
  bf16 = save_pretrained(policy, tmp_path / "bf16", dtype="bfloat16")
  size = lambda d: (d / hf_io.SINGLE_FILE).stat().st_size
  assert size(bf16) < 0.55 * size(f32)
  loaded = load_pretrained(bf16)
  assert loaded.config.param_dtype == "bfloat16" and loaded.config.dtype == "bfloat16"
  q = loaded.variables["params"]["layers"]["self_attn"]["q_proj"]["kernel"]
  assert q.dtype == np.dtype("bfloat16")
  up = load_pretrained(bf16, dtype="float32", compute_dtype="float32")
  np.testing.assert_allclose(np.asarray(up.logits(IDS, MASK)), np.asarray(policy.logits(IDS, MASK)), atol=0.05)


def test_tokenizer_files_are_copied(tmp_path):
  src = tmp_path / "src"
  src.mkdir()
  (src / "tokenizer.json").write_text("{}")
  (src / "generation_config.json").write_text("{}")
  out = save_pretrained(tiny_policy(), tmp_path / "out", tokenizer_dir=src)
  assert (out / "tokenizer.json").is_file() and (out / "generation_config.json").is_file()


@pytest.fixture()
def exported(tmp_path):
  return save_pretrained(tiny_policy(), tmp_path / "model", dtype="float32")


def test_missing_tensor_is_named(exported):
  from safetensors import safe_open  # noqa: PLC0415
  with safe_open(exported / hf_io.SINGLE_FILE, framework="flax") as f:
    tensors = {k: np.asarray(f.get_tensor(k)) for k in f.keys() if k != "model.norm.weight"}
  save_file(tensors, exported / hf_io.SINGLE_FILE, metadata={"format": "pt"})
  with pytest.raises(DataError, match="model.norm.weight: tensor missing"):
    load_pretrained(exported)


def test_shape_mismatch_names_tensor_and_shapes(exported):
  config = json.loads((exported / "config.json").read_text())
  (exported / "config.json").write_text(json.dumps({**config, "intermediate_size": 100}))
  with pytest.raises(DataError, match=r"gate_proj.weight: expected shape \[100, 64\] from config.json, found \[128, 64\]"):
    load_pretrained(exported)


def test_not_a_model_directory(tmp_path):
  with pytest.raises(DataError, match="config.json"):
    load_pretrained(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
  with pytest.raises(DataError, match="config.json: num_attention_heads: required field missing"):
    load_pretrained(tmp_path)
