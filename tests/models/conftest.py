"""Tiny random Hugging Face models saved to disk once per session (parity tests need torch)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import pathlib
from unittest import mock

import pytest

VOCAB = 128


@dataclasses.dataclass
class HFModel:
  name: str
  model: object  # the torch model, eval mode, float32
  path: pathlib.Path  # its save_pretrained directory


def _hf_config(kind: str):
  import transformers  # noqa: PLC0415

  common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, initializer_range=0.1,
                bos_token_id=1, eos_token_id=2, pad_token_id=0, max_position_embeddings=256)
  if kind == "llama_linear":  # ToolLLaMA-like: linear RoPE x2, untied, GQA
    return transformers.LlamaConfig(
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0},
        tie_word_embeddings=False, rms_norm_eps=1e-5, **common)
  if kind == "llama3_tied":  # Llama-3.2-like: llama3 RoPE (band edges inside the tiny head_dim), tied
    return transformers.LlamaConfig(
        rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 32,
                         "rope_theta": 500000.0},
        tie_word_embeddings=True, **common)
  if kind == "qwen2":  # q/k/v bias, GQA, untied
    return transformers.Qwen2Config(rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                                    tie_word_embeddings=False, **common)
  raise ValueError(kind)


def build_hf_model(kind: str, directory: pathlib.Path) -> HFModel:
  torch = pytest.importorskip("torch")
  import transformers  # noqa: PLC0415

  torch.manual_seed(sum(map(ord, kind)))
  config = _hf_config(kind)
  model = (transformers.Qwen2ForCausalLM if kind == "qwen2" else transformers.LlamaForCausalLM)(config)
  with torch.no_grad():  # norms and biases start at 1 / 0: perturb them so a mix-up would show
    for name, param in model.named_parameters():
      if "norm" in name or "bias" in name:
        param.add_(0.2 * torch.randn_like(param))
  model.eval()
  model.save_pretrained(directory)
  return HFModel(kind, model, directory)


@pytest.fixture(scope="session")
def hf_store(tmp_path_factory):
  """`get(kind)`: the tiny HF model of that kind, built and saved once per session."""
  built: dict[str, HFModel] = {}

  def get(kind: str) -> HFModel:
    if kind not in built:
      built[kind] = build_hf_model(kind, tmp_path_factory.mktemp(kind))
    return built[kind]

  return get


@pytest.fixture(scope="session", params=["llama_linear", "llama3_tied", "qwen2"])
def hf_model(request, hf_store) -> HFModel:
  return hf_store(request.param)


@pytest.fixture(scope="session")
def hf_llama(hf_store) -> HFModel:
  return hf_store("llama_linear")


# The vocabulary arrays of a GGUF: transformers parses them value by value for the config and
# the model (which never use them: the vocabulary size is its own key); the tokenizer it builds
# reads them with its own reader, not `gguf.GGUFReader`.
VOCABULARY_KEYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                   "tokenizer.ggml.scores")


class _WithoutVocabulary:
  """A parsed `GGUFReader` whose `fields` leave out the vocabulary arrays; everything else is the reader's."""

  def __init__(self, reader):
    self._reader = reader
    self.fields = type(reader.fields)((k, v) for k, v in reader.fields.items() if k not in VOCABULARY_KEYS)

  def __getattr__(self, name):
    return getattr(self._reader, name)


@contextlib.contextmanager
def parsed_once(gguf_file: pathlib.Path):
  """While transformers loads `gguf_file`: the metadata parsed once, gguf's tensor-name map built once.

  transformers re-reads the file with `gguf.GGUFReader` twice per model load and once per
  `AutoTokenizer` (for the config), turns every metadata value, the 49k-entry vocabulary and
  merges included, into Python values each time, and builds `gguf.get_tensor_name_map` once
  per module (~400 times for SmolLM2): most of its load time, and none of it reading the
  model. The reader our import already parsed (without the vocabulary arrays, see
  VOCABULARY_KEYS) and one map per (arch, layers) are handed out instead; the tensors,
  their dequantization and transformers' own mapping and un-permutation are untouched.
  """
  import gguf  # noqa: PLC0415

  from steptool_jax.models import gguf_io  # noqa: PLC0415

  reader, original = _WithoutVocabulary(gguf_io.open_gguf(gguf_file)), gguf.GGUFReader
  same_file = lambda path: pathlib.Path(path).resolve() == gguf_file.resolve()
  open_reader = lambda path, *args, **kwargs: reader if same_file(path) else original(path, *args, **kwargs)
  with mock.patch.object(gguf, "GGUFReader", open_reader), \
      mock.patch.object(gguf, "get_tensor_name_map", functools.cache(gguf.get_tensor_name_map)):
    yield


@pytest.fixture(scope="session")
def smollm2_hf(smollm2_gguf):
  """transformers' own GGUF loading of the same file (PyTorch, float32, eval mode), once per test process."""
  torch = pytest.importorskip("torch")
  pytest.importorskip("accelerate")
  import transformers  # noqa: PLC0415

  # One thread: under `pytest -n 2` on two cores, OpenMP's spinning threads made a 32-token
  # `generate` ten times slower (81 s of CPU instead of 7).
  torch.set_num_threads(1)
  with parsed_once(smollm2_gguf):
    return transformers.AutoModelForCausalLM.from_pretrained(
        smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32).eval()
