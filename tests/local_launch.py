"""Commands run as several local JAX processes through `python -m steptool_jax.launch_local`.

What the multi-process tests share: the launcher's command line, an environment with a
persistent XLA compilation cache (process 0 of a relaunch compiles nothing; shared by
every test session's workers, see `shared_dir`), and the output split by process.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import sys
from typing import Sequence


REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCHER = (sys.executable, "-m", "steptool_jax.launch_local")
HANG_GUARD_S = 600  # generous (2 shared CPU cores): a launch that hangs fails here instead of holding CI


@dataclasses.dataclass(frozen=True)
class Launched:
  returncode: int
  stdout: str
  stderr: str

  def lines(self, process: int, stream: str = "stdout") -> list[str]:
    """The lines process `process` printed on `stream`, without their `[pN] ` prefix."""
    prefix = f"[p{process}] "
    text = self.stdout if stream == "stdout" else self.stderr
    return [line[len(prefix):] for line in text.splitlines() if line.startswith(prefix)]

  def tail(self, chars: int = 4000) -> str:
    return f"--- stdout\n{self.stdout[-chars:]}\n--- stderr\n{self.stderr[-chars:]}"


def environment(compile_cache: pathlib.Path, **extra: str) -> dict[str, str]:
  """The launched processes' environment: this one's, this checkout first on the path, a
  compilation cache, no hub access."""
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))),
         "JAX_COMPILATION_CACHE_DIR": str(compile_cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
         "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
  env.pop("JAX_NUM_CPU_DEVICES", None)  # the launcher sets it per process
  env.update(extra)
  return env


def launch_command(processes: int, devices_per_process: int, command: Sequence[str]) -> list[str]:
  return [*LAUNCHER, f"--processes={processes}", f"--devices_per_process={devices_per_process}", "--", *command]


def launch(processes: int, devices_per_process: int, command: Sequence[str], *, env: dict[str, str],
           timeout: float = HANG_GUARD_S) -> Launched:
  done = subprocess.run(launch_command(processes, devices_per_process, command), cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)
  return Launched(done.returncode, done.stdout, done.stderr)


def shared_dir(tmp_path_factory, name: str) -> pathlib.Path:
  """A directory all xdist workers of this test session share (the base temp's parent is common to them)."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent
  path = root / name
  path.mkdir(parents=True, exist_ok=True)
  return path
