"""A misspelt --config override is one clear line and exit status 2, not a traceback."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import types

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


@pytest.mark.parametrize("module,arguments,expected", [
    ("steptool_jax.train", ["--config=configs/no_such.py"],
     "error: --config=configs/no_such.py: the config file cannot be loaded: [Errno 2] No such file or directory:"
     " 'configs/no_such.py'"),
    ("steptool_jax.sft", ["--config=configs/tiny.py:sft,bogus"],
     "error: --config=configs/tiny.py:sft,bogus: configs/tiny.py: unknown variants ['bogus']; expected some of"
     " ('sft', 'lora', 'final', 'summed', 'mesh8')"),
    ("steptool_jax.evaluate", ["--config=configs/no_such.py"],
     "error: --config=configs/no_such.py: the config file cannot be loaded: [Errno 2] No such file or directory:"
     " 'configs/no_such.py'"),
    ("steptool_jax.evaluate", ["--config=configs/evaluate.py:oracle"],
     "error: --config=configs/evaluate.py:oracle: configs/evaluate.py: unknown variant 'oracle'; expected one of"
     " expert, give_up, random, smollm2"),
    ("steptool_jax.train", ["--config=configs/tiny.py", "--workdir={file}/run"],
     "error: --workdir: expected a directory, found the regular file {file} in the way of {file}/run"),
])
def test_a_config_file_or_path_that_cannot_be_used_is_one_line(module, arguments, expected, tmp_path):
  (tmp_path / "file").write_text("not a directory")
  arguments = [a.format(file=tmp_path / "file") for a in arguments]
  if module != "steptool_jax.evaluate" and not any(a.startswith("--workdir=") for a in arguments):
    arguments.append(f"--workdir={tmp_path / 'run'}")
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
  done = subprocess.run([sys.executable, "-m", module, *arguments], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=120)
  assert done.returncode == 2, done.stderr[-2000:]
  assert done.stderr.strip().splitlines() == [expected.format(file=tmp_path / "file")]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing was started


def test_tensorstore_callbacks_on_a_closed_loop_are_dropped_and_nothing_else(monkeypatch):
  from steptool_jax import cli  # noqa: PLC0415
  shown = []
  monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: shown.append(unraisable.exc_value))
  monkeypatch.setattr(sys, "excepthook", lambda kind, error, tb: shown.append(error))
  cli._drop_late_loop_callbacks()
  loop = asyncio.new_event_loop()
  loop.close()
  with pytest.raises(RuntimeError) as late:  # what TensorStore meets when a failed save's writes finish
    loop.call_soon_threadsafe(print)
  elsewhere, other = RuntimeError("Event loop is closed"), ValueError("a bug")
  for error in (late.value, elsewhere, other):
    sys.unraisablehook(types.SimpleNamespace(exc_type=type(error), exc_value=error, exc_traceback=error.__traceback__,
                                             err_msg=None, object=None))
    sys.excepthook(type(error), error, error.__traceback__)
  assert shown == [elsewhere, elsewhere, other, other]
