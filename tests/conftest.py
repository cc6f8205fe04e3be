"""Test-wide set-up: 8 fake CPU devices for sharding tests, the shared reference data."""

import os
import pathlib

# Must happen before any JAX backend starts.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

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
