"""A misspelt --config override is one clear line and exit status 2, not a traceback."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module,config,override,expected", [
    ("steptool_jax.train", "configs/tiny.py", "--config.env.no_such_field=1",
     "error: --config.env.no_such_field: the config has no field 'no_such_field' "
     "(check the spelling against the config file)"),
    ("steptool_jax.evaluate", "configs/evaluate.py", "--config.eval.splt=test",
     "error: --config.eval.splt: the config has no field 'splt'; did you mean 'split'?"),
])
def test_unknown_config_field_is_a_usage_error(module, config, override, expected, tmp_path):
  command = [sys.executable, "-m", module, f"--config={config}", override]
  if module == "steptool_jax.train":
    command.append(f"--workdir={tmp_path}")
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
  done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert done.returncode == 2, done.stderr[-2000:]
  assert done.stderr.strip().splitlines()[-1] == expected
  assert "Traceback" not in done.stderr
  assert not any(tmp_path.iterdir())  # nothing was started
