"""`train_and_evaluate` end to end on the tiny config: resume (and the PPO objective
improving), NaN, SIGTERM, SFT -> PPO.

All runs use the built-in environment's data at test size (`tiny_run_config`: 32 rows of
128 tokens, batch 4) on one CPU device; the persistent compilation cache makes the
repeated runs of the same program compile once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from steptool_jax import train
from steptool_jax.export import restore_orbax_tree
from steptool_jax.models import Policy
from steptool_jax.parallel import make_mesh
from steptool_jax.config.run import parse_run_config
from steptool_jax.trainer import policy_init
from steptool_jax.trainer.run import checkpointing, loop
from steptool_jax.trainer.run.metrics import JSONL
from tests.trainer.fixtures import REPO, compile_cache, data_cache, tiny_run_config  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("compile_cache")

ONE_DEVICE = jax.devices()[:1]


def read_metrics(workdir) -> list[dict]:
  """metrics.jsonl without the timing entries (the only thing allowed to differ between runs)."""
  lines = (workdir / JSONL).read_text().splitlines()
  return [{k: v for k, v in json.loads(line).items() if not k.startswith("perf/")} for line in lines]


def test_a_resumed_run_with_the_stability_options_equals_an_uninterrupted_one(tmp_path, data_cache):
  """A separate LoRA critic (its adapters and optimizer state), its warm-up and the running
  reward statistics are state: killed after step 3 (checkpoint at 2) and resumed, the run
  ends exactly where an uninterrupted one does. The killed run's workdir is the uninterrupted
  one's as it was after step 3: steps 1-3 logged, checkpoint 2 the last one (every 2 steps)."""
  config = tiny_run_config(data_cache, "lora", ppo__critic="separate", ppo__critic_warmup_updates=2,
                           reward__normalize="running")
  straight = train.train_and_evaluate(config, tmp_path / "straight", devices=ONE_DEVICE)
  shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
  shutil.rmtree(checkpointing.checkpoint_dir(tmp_path / "resumed") / "4")
  metrics = (tmp_path / "resumed" / JSONL).read_text().splitlines(keepends=True)
  (tmp_path / "resumed" / JSONL).write_text("".join(metrics[:3]))
  resumed = train.train_and_evaluate(config, tmp_path / "resumed", devices=ONE_DEVICE)
  assert resumed.start_step == 2
  assert resumed.step == straight.step == 4
  for part in ("policy", "critic", "critic_opt_state", "reward_stats", "opt_state"):
    jax.tree.map(np.testing.assert_array_equal, getattr(resumed.state, part), getattr(straight.state, part))
  assert read_metrics(tmp_path / "resumed") == read_metrics(tmp_path / "straight")
  metrics = read_metrics(tmp_path / "straight")
  assert [m["critic/warmup"] for m in metrics] == [1.0, 1.0, 0.0, 0.0]
  assert metrics[-1]["reward/normalizer_std"] > 0 and "critic/grad_norm" in metrics[-1]


def test_nan_is_reported_and_never_checkpointed(tmp_path, data_cache):
  # A KL coefficient of 1e38 turns the first non-zero KL (step 2: at step 1 the policy is
  # its own reference) into returns of ~1e38 and an infinite value loss. (The coefficient
  # is state, not a constant of the program: this run reuses the compiled update.)
  config = tiny_run_config(data_cache, reward__init_kl_coef=1e38, checkpoint__every_steps=1)
  with pytest.raises(loop.NonFiniteError, match="step 2: non-finite"):
    train.train_and_evaluate(config, tmp_path, devices=ONE_DEVICE)
  assert checkpointing.Checkpointer(tmp_path, read_only=True).all_steps() == [1]
  last = json.loads((tmp_path / JSONL).read_text().splitlines()[-1])
  assert last["step"] == 2 and last["nonfinite"] == 1.0
  saved = restore_orbax_tree(checkpointing.checkpoint_dir(tmp_path) / "1" / "policy")
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(saved))


def test_sigterm_mid_run_saves_a_restorable_checkpoint_and_exits_0(tmp_path, data_cache):
  workdir = tmp_path / "run"
  overrides = {"mesh.data": 1, "data.cache_dir": data_cache, "env.num_tasks": 40,
               "data.max_context_len": 96, "data.max_response_len": 32, "data.min_bucket_len": 128,
               "batch.size": 4, "batch.minibatch_size": 2, "batch.grad_accum_steps": 2, "ppo.epochs": 2,
               "train.num_steps": 1000, "checkpoint.every_steps": 1000, "log.progress_bar": False}
  command = [sys.executable, "-m", "steptool_jax.train", "--config=configs/tiny.py", f"--workdir={workdir}",
             *(f"--config.{k}={v}" for k, v in overrides.items())]
  # One CPU device; XLA's backend optimisations off: this checks preemption, not speed, and
  # the compile takes half as long.
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()}
  process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    deadline = time.monotonic() + 240
    while not ((workdir / JSONL).is_file() and len((workdir / JSONL).read_text().splitlines()) >= 2):
      assert process.poll() is None, process.communicate()[0][-3000:]
      assert time.monotonic() < deadline, "no training step within 240 s"
      time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
  finally:
    if process.poll() is None:
      process.kill()
  assert process.returncode == 0, output[-3000:]
  assert "preempted at step" in output

  steps_done = len((workdir / JSONL).read_text().splitlines())
  assert 2 <= steps_done < 1000
  checkpoints = checkpointing.Checkpointer(workdir, read_only=True)
  assert checkpoints.all_steps() == [steps_done]
  saved = checkpointing.checkpoint_dir(workdir) / str(steps_done)
  train_state = restore_orbax_tree(saved / "train_state")
  assert int(train_state["step"]) == steps_done
  policy = restore_orbax_tree(saved / "policy")
  assert set(policy) == {"params", "value_head"} and all(np.isfinite(x).all() for x in jax.tree.leaves(policy))
  progress = checkpoints.manager.restore(steps_done, args=checkpointing.ocp.args.Composite(
      progress=checkpointing.ocp.args.JsonRestore()))["progress"]
  assert (progress["epoch"], progress["batch_index"]) == divmod(steps_done, progress["steps_per_epoch"])


def test_sft_run_learns_and_ppo_starts_from_its_merged_policy(tmp_path, data_cache):
  sft_config = tiny_run_config(data_cache, "sft,lora", train__num_steps=3, batch__grad_accum_steps=2)
  result = train.train_and_evaluate(sft_config, tmp_path / "sft", devices=ONE_DEVICE)
  losses = [m["loss"] for m in read_metrics(tmp_path / "sft")]
  assert len(losses) == 3 and losses[-1] < losses[0]  # SFT lowers the loss on the assistant actions
  assert set(restore_orbax_tree(checkpointing.checkpoint_dir(tmp_path / "sft") / "3" / "policy")) == {"lora"}

  mesh = make_mesh({"data": 1}, ONE_DEVICE)
  vocab = result.state.policy["params"]["embed"]["embedding"].shape[0]
  sft_run = parse_run_config(sft_config)
  trained = Policy(config=policy_init.random_model_config(sft_run, vocab), variables=result.state.policy,
                   lora=sft_run.model.lora.lora_config())
  ppo_config = parse_run_config(tiny_run_config(data_cache, "lora", model__init_from=str(tmp_path / "sft")))
  start = policy_init.initial_policy(ppo_config, vocab, mesh)
  ids = np.arange(1, 33, dtype=np.int32).reshape(2, 16)
  # PPO's starting point is the SFT policy (adapters merged), plus fresh adapters that
  # start at zero: the same function.
  np.testing.assert_allclose(start.token_logprobs(ids), trained.token_logprobs(ids), atol=2e-5)
  assert start.lora is not None and "lora" in start.variables


def test_each_way_a_run_stops_has_its_exit_status():
  save_failed = checkpointing.CheckpointSaveError("checkpoint: saving step 4 to /w/checkpoints/4 failed: ...")
  statuses = {"save": train.failure_status(save_failed),
              "metrics": train.failure_status(train.MetricsWriteError("log: appending step 4 to ... failed")),
              "nonfinite": train.failure_status(loop.NonFiniteError("step 2: non-finite values")),
              "no good checkpoint": train.failure_status(checkpointing.CheckpointError("no checkpoint under /w")),
              "bad config": train.failure_status(ValueError("ppo.vf_coef: expected ...")),
              "bug": train.failure_status(KeyError("x"))}
  assert statuses == {"save": 3, "metrics": 3, "nonfinite": 1, "no good checkpoint": 2, "bad config": 2, "bug": None}
  assert (train.EXIT_SAVE_FAILED, train.EXIT_NONFINITE, train.EXIT_BAD_INPUT) == (3, 1, 2)
