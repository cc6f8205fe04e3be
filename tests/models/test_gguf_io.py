"""GGUF import on tiny files written in the test: every quant type equals `gguf`'s own dequantize,
Llama Q/K rows come back in the HF order, Qwen2's are left alone, config from the metadata, the
llama3 RoPE factors, placement on a mesh, and the errors for what cannot be read."""

from __future__ import annotations

import math

import gguf
import jax
import numpy as np
import pytest

from steptool_jax.data.errors import DataError
from steptool_jax.models import gguf_io, hf_io, load_pretrained, read_model_config, variable_shardings
from steptool_jax.models.config import RopeScaling
from steptool_jax.models.rope import inverse_frequencies
from steptool_jax.parallel import make_mesh
from tests.models import tiny_gguf
from tests.models.tiny_gguf import HAND_MADE_TYPES, HEAD_DIM, HEADS, KV_HEADS, T, write_tiny_gguf

ALL_TYPES = tiny_gguf.quantizable_types() + list(HAND_MADE_TYPES)


def unpermute(stored: np.ndarray, heads: int) -> np.ndarray:
  """The HF row order back from llama.cpp's, element by element: HF row (h, half, j) is stored row (h, j, half)."""
  head_dim = stored.shape[0] // heads
  out = np.empty_like(stored)
  for h in range(heads):
    for j in range(head_dim // 2):
      for half in range(2):
        out[h * head_dim + half * head_dim // 2 + j] = stored[h * head_dim + 2 * j + half]
  return out


def hf_layout(policy) -> dict[str, np.ndarray]:
  """Our imported params in the HF layout (the export mapping, itself checked against transformers)."""
  return dict(hf_io.hf_tensors(policy.config, policy.variables["params"], np.float32))


def reference(tiny: tiny_gguf.TinyGGUF, hf_name: str) -> np.ndarray:
  """`gguf`'s dequantize of the stored bytes, Q/K rows put back in the HF order for Llama."""
  names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, tiny_gguf.LAYERS)
  data, kind = tiny.stored[names.get_name(hf_name, try_suffixes=(".weight", ".bias"))]
  values = gguf.quants.dequantize(data, kind).astype(np.float32)
  if tiny.arch == "llama" and (".q_proj." in hf_name or ".k_proj." in hf_name):
    values = unpermute(values, HEADS if ".q_proj." in hf_name else KV_HEADS)
  return values


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_every_type_imports_as_ggufs_own_dequantize(tmp_path, qtype):
  tiny = write_tiny_gguf(tmp_path / "m.gguf", qtype=qtype)
  ours = hf_layout(load_pretrained(tiny.path, with_value_head=False))
  assert set(ours) == set(tiny.hf)
  for name in tiny.hf:
    np.testing.assert_array_equal(ours[name], reference(tiny, name), err_msg=name)
  if qtype in (T.F32, T.F16, T.BF16, T.Q8_0):  # near-lossless: the values are the originals
    tolerance = {T.F32: 0.0, T.F16: 1e-3, T.BF16: 1e-2, T.Q8_0: 2e-2}[qtype]
    for name, original in tiny.hf.items():
      np.testing.assert_allclose(ours[name], original, rtol=tolerance, atol=tolerance * 0.05, err_msg=name)


def test_llama_q_and_k_rows_are_unpermuted_and_nothing_else_is(tmp_path):
  tiny = write_tiny_gguf(tmp_path / "m.gguf", qtype=T.F32)
  ours = hf_layout(load_pretrained(tiny.path, with_value_head=False))
  q, k = "model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight"
  np.testing.assert_array_equal(ours[q], tiny.hf[q])
  np.testing.assert_array_equal(ours[k], tiny.hf[k])
  # The file really holds them permuted (so the test above could fail), and V is not.
  assert not np.array_equal(tiny.stored["blk.1.attn_q.weight"][0], tiny.hf[q])
  v = "model.layers.1.self_attn.v_proj.weight"
  np.testing.assert_array_equal(tiny.stored["blk.1.attn_v.weight"][0], tiny.hf[v])


def test_qwen2_keeps_its_row_order_and_biases(tmp_path):
  tiny = write_tiny_gguf(tmp_path / "q.gguf", arch="qwen2", qtype=T.F32, tied=True)
  policy = load_pretrained(tiny.path, with_value_head=False)
  assert policy.config.model_type == "qwen2" and policy.config.attention_bias and policy.config.tie_word_embeddings
  ours = hf_layout(policy)
  assert set(ours) == set(tiny.hf)  # biases included, no lm_head
  for name, original in tiny.hf.items():
    np.testing.assert_array_equal(ours[name], original, err_msg=name)


@pytest.mark.torch
@pytest.mark.parametrize("arch, tied", [("llama", False), ("qwen2", True)])
def test_logits_equal_transformers_loading_the_same_file(tmp_path, arch, tied):
  # transformers un-permutes Llama's Q/K with its own code: a second, independent reading of the file.
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  tiny = write_tiny_gguf(tmp_path / "m.gguf", arch=arch, qtype=T.Q8_0, tied=tied)
  model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32).eval()
  ids = np.random.default_rng(0).integers(0, tiny_gguf.VOCAB, (2, 12)).astype(np.int32)
  with torch.no_grad():
    ref = model(torch.tensor(ids, dtype=torch.long)).logits.numpy()
  ours = np.asarray(load_pretrained(tiny.path).logits(ids))
  assert ref.std() > 0.3
  np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)


def test_config_comes_from_the_metadata(tmp_path):
  tiny = write_tiny_gguf(tmp_path / "m.gguf")
  config = read_model_config(tiny.path, param_dtype="bfloat16")
  assert (config.vocab_size, config.hidden_size, config.intermediate_size, config.num_layers) == (96, 256, 512, 2)
  assert (config.num_heads, config.num_kv_heads, config.head_dim) == (HEADS, KV_HEADS, HEAD_DIM)
  assert (config.rms_norm_eps, config.rope_theta, config.rope_scaling) == (pytest.approx(1e-5), 10000.0, None)
  assert (config.max_position_embeddings, config.tie_word_embeddings, config.attention_bias) == (512, False, False)
  assert (config.bos_token_id, config.eos_token_ids, config.pad_token_id) == (1, (2,), 0)
  assert (config.param_dtype, config.dtype) == ("bfloat16", "bfloat16")
  policy = load_pretrained(tiny.path, "bfloat16", compute_dtype="float32")
  assert policy.variables["params"]["embed"]["embedding"].dtype == jax.numpy.bfloat16
  assert policy.config.dtype == "float32"
  np.testing.assert_array_equal(policy.variables["value_head"]["kernel"], 0.0)  # fresh: a GGUF has none


def llama3_factors(head_dim: int, theta: float, factor: float, low: float, high: float, old: int) -> np.ndarray:
  """The divisors llama.cpp's converter writes to `rope_freqs.weight`, one frequency at a time."""
  out = []
  for i in range(0, head_dim, 2):
    wavelength = 2 * math.pi * theta ** (i / head_dim)
    if wavelength < old / high:
      out.append(1.0)
    elif wavelength > old / low:
      out.append(factor)
    else:
      smooth = (old / wavelength - low) / (high - low)
      out.append(1 / ((1 - smooth) / factor + smooth))
  return np.asarray(out, np.float32)


def test_llama3_rope_scaling_is_recovered_from_the_factor_tensor(tmp_path):
  # Llama 3.2's scaling at head_dim 64: theta 500000, factor 32, band 8192/4 .. 8192.
  factors = llama3_factors(HEAD_DIM, 500000.0, 32.0, 1.0, 4.0, 8192)
  assert ((factors > 1) & (factors < 32)).sum() >= 2  # the band the fit needs is inside this head_dim
  tiny = write_tiny_gguf(tmp_path / "m.gguf", rope_factors=factors, theta=500000.0)
  config = read_model_config(tiny.path)
  assert config.rope_scaling == RopeScaling("llama3", 32.0, 1.0, pytest.approx(4.0, rel=1e-4), 8192)
  plain = 1.0 / 500000.0 ** (np.arange(0, HEAD_DIM, 2) / HEAD_DIM)
  np.testing.assert_allclose(inverse_frequencies(config), plain / factors, rtol=1e-5)
  load_pretrained(tiny.path)  # the factor tensor is not mistaken for a weight


def test_factors_that_are_no_llama3_scaling_are_refused(tmp_path):
  factors = np.linspace(1.0, 3.0, HEAD_DIM // 2)[::-1].astype(np.float32)  # rises towards high frequencies
  tiny = write_tiny_gguf(tmp_path / "m.gguf", rope_factors=factors)
  with pytest.raises(DataError, match=r"m\.gguf: rope_freqs\.weight: expected the per-frequency factors of a llama3"):
    read_model_config(tiny.path)


def test_import_places_each_tensor_in_its_sharding(tmp_path):
  tiny = write_tiny_gguf(tmp_path / "m.gguf", qtype=T.Q8_0)
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  sharded = load_pretrained(tiny.path, mesh=mesh)
  single = load_pretrained(tiny.path)
  expected = variable_shardings(sharded.config, None, mesh)["params"]
  for path, leaf in jax.tree_util.tree_leaves_with_path(sharded.variables["params"]):
    want = expected
    for key in path:
      want = want[key.key]
    assert leaf.sharding.is_equivalent_to(want, leaf.ndim), path
  q = sharded.variables["params"]["layers"]["self_attn"]["q_proj"]["kernel"]
  assert q.addressable_shards[0].data.shape == (2, 128, 2, HEAD_DIM)  # [layers, embed/fsdp, heads/tensor, head_dim]
  jax.tree_util.tree_map(np.testing.assert_array_equal, sharded.variables, single.variables)


# --- What cannot be read ----------------------------------------------------------------------

def test_unknown_architecture(tmp_path):
  tiny = write_tiny_gguf(tmp_path / "g.gguf", architecture_name="gemma")
  with pytest.raises(DataError, match=r"g\.gguf: general\.architecture: expected one of \['llama', 'qwen2'\].*"
                                      r"found 'gemma'"):
    load_pretrained(tiny.path)


def test_a_type_gguf_cannot_dequantize_is_named_with_its_tensor(tmp_path):
  tiny = write_tiny_gguf(tmp_path / "k.gguf", qtype=T.Q8_K)
  with pytest.raises(DataError, match=r"k\.gguf: token_embd\.weight: stored as Q8_K, which gguf .* cannot "
                                      r"dequantize; expected one of F32, F16, .*Q4_K.*Q6_K"):
    load_pretrained(tiny.path)


def test_a_type_id_gguf_does_not_know(tmp_path):
  tiny = write_tiny_gguf(tmp_path / "u.gguf", qtype=T.F32)
  # Overwrite the type of the tensor-info record of `output_norm.weight` (u32 after its dims).
  blob = bytearray(tiny.path.read_bytes())
  name = b"output_norm.weight"
  at = blob.index(name) + len(name)
  n_dims = int.from_bytes(blob[at:at + 4], "little")
  type_at = at + 4 + 8 * n_dims
  assert int.from_bytes(blob[type_at:type_at + 4], "little") == T.F32
  blob[type_at:type_at + 4] = (250).to_bytes(4, "little")
  tiny.path.write_bytes(bytes(blob))
  with pytest.raises(DataError, match=r"u\.gguf: header: not a GGUF file gguf .* can read: .*250"):
    load_pretrained(tiny.path)


def test_a_tensor_the_importer_does_not_know(tmp_path):
  extra = ("blk.0.attn_q_norm.weight", np.ones(HEAD_DIM, np.float32), None)
  tiny = write_tiny_gguf(tmp_path / "x.gguf", extra_tensor=extra)
  with pytest.raises(DataError, match=r"x\.gguf: blk\.0\.attn_q_norm\.weight: tensor this importer does not know"):
    load_pretrained(tiny.path)


def test_a_missing_tensor(tmp_path):
  tiny = write_tiny_gguf(tmp_path / "q.gguf", architecture_name="qwen2")  # llama tensors: no q/k/v biases
  with pytest.raises(DataError, match=r"q\.gguf: blk\.0\.attn_q\.bias: tensor missing from the file"):
    load_pretrained(tiny.path)


def test_finding_the_file(tmp_path):
  (tmp_path / "one").mkdir()
  tiny = write_tiny_gguf(tmp_path / "one" / "m.gguf")
  assert gguf_io.gguf_file_of(tmp_path / "one") == tiny.path
  assert gguf_io.gguf_file_of(tiny.path) == tiny.path
  (tmp_path / "one" / "config.json").write_text("{}")
  assert gguf_io.gguf_file_of(tmp_path / "one") is None  # a Hugging Face directory
  (tmp_path / "two").mkdir()
  for name in ("a.gguf", "b.gguf"):
    (tmp_path / "two" / name).write_bytes(tiny.path.read_bytes())
  with pytest.raises(DataError, match=r"two: \*\.gguf: expected exactly one GGUF file in the directory, found 2"):
    load_pretrained(tmp_path / "two")
  with pytest.raises(DataError, match=r"missing\.gguf: file: no such GGUF file"):
    load_pretrained(tmp_path / "missing.gguf")


def test_rope_row_order_inverts_the_llama_cpp_permutation():
  weight = np.arange(KV_HEADS * HEAD_DIM * 3, dtype=np.float32).reshape(KV_HEADS * HEAD_DIM, 3)
  stored = tiny_gguf.llama_cpp_permute(weight, KV_HEADS)
  np.testing.assert_array_equal(stored[gguf_io.rope_row_order(KV_HEADS, HEAD_DIM)], weight)
