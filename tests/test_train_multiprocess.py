"""`python -m steptool_jax.train` as 2 local processes x 1 CPU device, against 1 process x 2.

The run: `configs/tiny.py:mesh8` at test size (24 rows of 128 tokens, batches of 8, 2 PPO
epochs, 4 steps: into the second epoch, a checkpoint after every step, all kept), started
through `python -m steptool_jax.launch_local`, killed (SIGKILL to one process), relaunched
and then preempted (SIGTERM to one process) at step 3. Its reference is the same run as
1 process x 2 devices (in this process), stopped after step 3: the same per-step losses and
step-3 parameters within float tolerance, since the gradients' mean over the 2 devices is
reduced by XLA inside one process and by gloo across two, in a different order (one device
per process keeps the programs small: the 2 x 4 vs 1 x 8 layout was measured the same way,
docs/training.md "Multi-host"). A resume that restored anything wrongly (a shard, the
optimizer state, the data position, the RNG) would move step 3 by far more than that.

Each launch costs each process its start-up (~4 s of CPU importing), tracing, and on process
1 the compilation (JAX's persistent cache is written by process 0 only); so few, short runs.
"""

from __future__ import annotations

import json
import pathlib
import sys

import jax
import numpy as np
import pytest

from steptool_jax import train
from steptool_jax.export import restore_orbax_tree
from steptool_jax.trainer.run import checkpointing
from steptool_jax.trainer.run.metrics import JSONL
from tests import local_launch
from tests.trainer.fixtures import compile_cache  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

OVERRIDES = {"env.num_tasks": 30, "data.max_context_len": 96, "data.max_response_len": 32, "data.min_bucket_len": 128,
             "ppo.epochs": 2, "train.num_steps": 4, "checkpoint.every_steps": 1, "checkpoint.keep": 6,
             "log.progress_bar": False, "log.tensorboard": False}
NUM_STEPS = OVERRIDES["train.num_steps"]
TRAINED = ("params", "value_head")
# 1 x 8 vs 2 x 4, measured (6 steps): losses <= 1e-7 apart, the KL (~5) 1.4e-6 (relative 3e-7),
# parameters 7.5e-8. The tolerances leave a margin of about 10.
LOSSES = ("loss", "policy_loss", "value_loss", "kl", "grad_norm", "explained_variance")
LOSS_RTOL, LOSS_ATOL, PARAM_ATOL = 1e-5, 1e-6, 1e-6


def train_args(workdir: pathlib.Path) -> list[str]:
  return ["--config=configs/tiny.py:mesh8", f"--workdir={workdir}",
          *(f"--config.{key}={value}" for key, value in OVERRIDES.items())]


def read_metrics(workdir: pathlib.Path) -> list[dict]:
  """metrics.jsonl without the timings (all that may differ between equal runs)."""
  return [{k: v for k, v in json.loads(line).items() if not k.startswith("perf/")}
          for line in (workdir / JSONL).read_text().splitlines()]


@pytest.fixture(scope="session")
def launch_env(tmp_path_factory) -> dict[str, str]:
  return local_launch.environment(local_launch.shared_dir(tmp_path_factory, "jax-compile-cache-multiprocess"))


def assert_close_to_one_process(workdir: pathlib.Path, one_workdir: pathlib.Path, one_policy: dict, step: int) -> None:
  """The 2-process run's metrics of steps 1..`step` and its step-`step` checkpoint against
  the 1-process run's, within the float tolerance of a differently ordered reduction."""
  mine, theirs = read_metrics(one_workdir), read_metrics(workdir)
  assert [m["step"] for m in theirs] == [m["step"] for m in mine] == list(range(1, step + 1))
  for name in LOSSES:
    np.testing.assert_allclose([m[name] for m in theirs], [m[name] for m in mine], rtol=LOSS_RTOL, atol=LOSS_ATOL,
                               err_msg=name)
  policy = restore_orbax_tree(checkpointing.checkpoint_dir(workdir) / str(step) / "policy")
  for key in TRAINED:
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=PARAM_ATOL),
                 policy[key], jax.device_get(one_policy[key]))


def test_two_processes_killed_resumed_and_preempted_train_like_one(tmp_path, launch_env, compile_cache):  # noqa: F811
  workdir = tmp_path / "run"
  driver = [sys.executable, "-m", "tests.train_with_signal", *train_args(workdir)]

  # SIGKILL to process 1 while step 3 runs (step 2's checkpoint may still be in flight): the
  # launcher stops process 0 and exits 128 + 9.
  killed = local_launch.launch(2, 1, driver, env={**launch_env, "STEPTOOL_TEST_SIGNAL": "KILL:1:3"})
  assert killed.returncode == 128 + 9, killed.tail()
  assert "p1 failed first (p0 killed, p1 signal 9)" in killed.stderr.splitlines()[-1]
  # Process 0 alone made the data cache in the shared workdir; process 1 waited, then read it.
  assert any("generating the environment's data" in line for line in killed.lines(0, "stderr"))
  assert not any("generating the environment's data" in line for line in killed.lines(1, "stderr"))
  assert any("waiting for process 0 to build the step-grained data" in line for line in killed.lines(1, "stderr"))
  survived = checkpointing.Checkpointer(workdir, read_only=True).latest_step()
  assert survived in (1, 2)

  # Relaunched: resumes from the last complete checkpoint; SIGTERM to process 1 while step 3
  # runs: both processes stop after it with one checkpoint and exit 0.
  stopped = local_launch.launch(2, 1, driver, env={**launch_env, "STEPTOOL_TEST_SIGNAL": "TERM:1:3"})
  assert stopped.returncode == 0, stopped.tail()
  assert any(f"resumed from {checkpointing.checkpoint_dir(workdir).absolute()}/{survived} " in line
             for line in stopped.lines(0, "stderr"))
  for process in (0, 1):
    assert any("step 3: SIGTERM received; checkpoint saved" in line for line in stopped.lines(process, "stderr"))
  assert any(line.startswith(f"preempted at step 3 of {NUM_STEPS}") for line in stopped.lines(0))
  assert not [line for line in stopped.lines(1) if line.startswith("preempted at step")]  # the summary is process 0's
  assert checkpointing.Checkpointer(workdir, read_only=True).latest_step() == 3
  # Both processes wrote their part of the checkpoint into the one workdir.
  for item in ("policy", "train_state"):
    saved = checkpointing.checkpoint_dir(workdir) / "3" / item
    assert (saved / "ocdbt.process_0").is_dir() and (saved / "ocdbt.process_1").is_dir()

  from configs import tiny  # noqa: PLC0415
  config = tiny.get_config("mesh8")
  config.update_from_flattened_dict(OVERRIDES)
  one = train.train_and_evaluate(config, tmp_path / "1x2", devices=jax.devices()[:2], halt_at_step=3)
  assert one.step == 3
  assert_close_to_one_process(workdir, tmp_path / "1x2", one.state.policy, step=3)


# Online PPO: 6 tasks give 4 train tasks, one batch of 8 rows in groups of 2, 4 rows per
# process (a process without rows of a short last batch: tests/trainer/sources/test_online.py).
# Greedy rollouts, so both layouts play the same episodes (each process on its own copy of the
# policy; one process on the global one).
ONLINE = {"rollout.mode": "online", "rollout.group_size": 2, "rollout.temperature": 0.0, "rollout.width_bucket": 320,
          "rollout.reuse_cache": False,
          "env.num_tasks": 6, "env.max_steps": 2, "data.max_context_len": 320, "data.max_response_len": 16,
          "data.min_bucket_len": 384, "ppo.epochs": 2, "train.num_steps": 1, "checkpoint.every_steps": 100,
          "log.progress_bar": False, "log.tensorboard": False}


def test_online_rollouts_across_two_processes_train_like_one(tmp_path, launch_env, compile_cache):  # noqa: F811
  args = ["--config=configs/tiny.py:mesh8", *(f"--config.{key}={value}" for key, value in ONLINE.items())]
  done = local_launch.launch(2, 1, [sys.executable, "-m", "steptool_jax.train", *args, f"--workdir={tmp_path / '2x1'}"],
                             env=launch_env)
  assert done.returncode == 0, done.tail()

  from configs import tiny  # noqa: PLC0415
  config = tiny.get_config("mesh8")
  config.update_from_flattened_dict(ONLINE)
  one = train.train_and_evaluate(config, tmp_path / "1x2", devices=jax.devices()[:2])
  assert one.status == "finished" and one.step == 1

  theirs = read_metrics(tmp_path / "2x1")
  assert [m["rollout/episodes"] for m in theirs] == [8.0]  # the statistics of both processes' episodes
  for m_theirs, m_mine in zip(theirs, read_metrics(tmp_path / "1x2"), strict=True):
    rollout = sorted(k for k in m_mine if k.startswith("rollout/"))
    assert rollout and {k: m_theirs[k] for k in rollout} == {k: m_mine[k] for k in rollout}
  assert_close_to_one_process(tmp_path / "2x1", tmp_path / "1x2", one.state.policy, step=1)
