r"""Step-grained PPO (StepTool), sharded over a device mesh.

    python -m steptool_jax.train --config=configs/tiny.py --workdir=/tmp/steptool-tiny
    python -m steptool_jax.train --config=configs/llama.py --workdir=gs://... \
        --config.model.path=/ckpt/Llama-3.1-8B-Instruct --config.data.train_path=/data/train.tsv

Top to bottom: config (typed and checked) -> distributed runtime -> mesh -> tokenizer ->
policy -> data source (the algorithm's: offline rows or online rollouts of this policy) ->
train state (restored from WORKDIR when it has checkpoints) -> one jitted, donated
`update(state, batch, rng)` -> the loop (progress, metrics, checkpoints, SIGTERM) -> a
summary with the next commands. `train_and_evaluate` is the same run as a function (tests
call it in-process); it runs whichever algorithm the config names (`python -m
steptool_jax.sft` runs the SFT ones), asking its record (`trainer.algorithms`) for the parts.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import sys
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from steptool_jax.cli import EXIT_BAD_INPUT, parse_flags, quiet_startup
from steptool_jax.config import schema
from steptool_jax.config.run import RunConfig, parse_run_config
from steptool_jax.data.files import atomic_write
from steptool_jax.models.tokenizer import load_tokenizer
from steptool_jax.parallel import make_mesh, replicated, sharding_context
from steptool_jax.rl.kl_controller import make_kl_controller
from steptool_jax.trainer import distributed, flops, optimizer, policy_init
from steptool_jax.trainer.algorithms import ALGORITHMS
from steptool_jax.trainer.run import checkpointing, loop
from steptool_jax.trainer.run.metrics import JSONL, MetricsWriter, MetricsWriteError
from steptool_jax.trainer.run.preemption import sigterm_flag
from steptool_jax.trainer.run.progress import Progress
from steptool_jax.trainer.run.summary import read_records, summary_lines
from steptool_jax.trainer.sources.batches import batch_shardings, local_rows
from steptool_jax.trainer.state import create_train_state, state_shardings

RESOLVED_CONFIG = "train_config.json"
# Exit statuses of `python -m steptool_jax.train` / `sft` (docs/training.md, "Exit statuses"):
# 0 finished or preempted (SIGTERM: checkpoint saved; run again to resume), EXIT_BAD_INPUT (2)
# a bad config, data file or path, or a workdir none of whose checkpoints can be restored.
EXIT_NONFINITE = 1  # the loss, a gradient or a parameter became NaN/inf; that state was not saved
EXIT_SAVE_FAILED = 3  # the run could not write its checkpoint or metrics (disk full, permission)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/tiny.py[:variant].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, caches. Resumes if it has"
                               " checkpoints.")


def train_and_evaluate(config: RunConfig | ml_collections.ConfigDict, workdir: str | os.PathLike[str], *,
                       devices: Sequence[jax.Device] | None = None,
                       halt_at_step: int | None = None) -> loop.RunResult:
  """Trains (the algorithm `config.algorithm` names) in `workdir`, resuming from its checkpoints.

  `config` is typed (`RunConfig`) or the ConfigDict of a config file. `devices` (default:
  all) are the devices of the mesh. `halt_at_step` (tests) stops after that step as if the
  process had been killed: no checkpoint beyond the periodic ones.

  Raises:
    ValueError: a bad config value (names the field), data file or path, before any work is
      done; `checkpointing.CheckpointError` when the workdir has checkpoints and none of them
      can be restored.
    loop.NonFiniteError: the loss, a gradient or a parameter became NaN/inf.
    checkpointing.CheckpointSaveError, MetricsWriteError: a checkpoint or a metrics line could
      not be written.
  """
  # --- Config --------------------------------------------------------------------------------
  run = config if isinstance(config, RunConfig) else parse_run_config(config)
  algorithm = ALGORITHMS[run.algorithm]
  workdir = pathlib.Path(workdir)
  devices = list(jax.devices() if devices is None else devices)
  run.check_paths()
  run.check_output_paths(workdir)
  mesh_sizes = run.mesh_sizes(len(devices), jax.process_count())
  config_json = checkpointing.config_json(run)
  is_main = jax.process_index() == 0
  if is_main:
    workdir.mkdir(parents=True, exist_ok=True)
    with atomic_write(workdir / RESOLVED_CONFIG) as f:
      f.write(json.dumps(config_json, indent=1, sort_keys=True) + "\n")
    logging.info("resolved config:\n%s", schema.to_config_dict(run))

  # --- Mesh ----------------------------------------------------------------------------------
  mesh = make_mesh(mesh_sizes, devices)
  logging.info("mesh %s over %d devices (%s)", dict(mesh.shape), mesh.devices.size, devices[0].device_kind)

  # --- Policy --------------------------------------------------------------------------------
  tokenizer = load_tokenizer(run.tokenizer, run.model.path)
  policy = policy_init.initial_policy(run, len(tokenizer), mesh)
  model_config, lora = policy.config, policy.lora
  logging.info("policy: %.1fM parameters, LoRA %s", model_config.num_params() / 1e6, lora)

  # --- Data ----------------------------------------------------------------------------------
  cache_dir = pathlib.Path(os.path.expanduser(run.data.cache_dir)) if run.data.cache_dir else workdir / "cache"
  source = algorithm.make_source(run, tokenizer, policy, cache_dir=cache_dir,
                                 local_rows=local_rows(mesh, run.batch.size))
  num_steps = run.train.num_steps or run.train.num_epochs * source.steps_per_epoch
  logging.info("data: %s; %d steps per epoch, %d steps", source.counters, source.steps_per_epoch, num_steps)

  # --- Train state ---------------------------------------------------------------------------
  steps_per_update = algorithm.optimizer_steps_per_update(run)
  tx = optimizer.make_optimizer(run.optim, num_steps * steps_per_update)
  trainable_keys = algorithm.trainable_collections(run)
  critic = policy_init.initial_critic(run, policy, mesh)  # a separate critic (ppo.critic), else None
  critic_tx = None if critic is None else optimizer.make_optimizer(run.optim, num_steps * steps_per_update)
  reward = run.reward
  create = functools.partial(
      create_train_state, optimizer=tx, trainable_keys=trainable_keys,
      kl=make_kl_controller(reward.kl_controller, reward.init_kl_coef, reward.kl_target, reward.kl_horizon),
      master_dtype=jnp.dtype(run.model.master_dtype), keep_reference=lora is None and algorithm.keeps_reference,
      critic_optimizer=critic_tx, normalize_rewards=reward.normalize == "running")
  run_key = policy_init.seed_key(run, policy_init.RUN_STREAM)
  abstract = jax.eval_shape(create, policy.variables, run_key, critic)
  shardings = state_shardings(abstract, model_config=model_config, lora=lora, mesh=mesh, optimizer=tx,
                              trainable_keys=trainable_keys, critic_optimizer=critic_tx)
  checkpointer = checkpointing.Checkpointer(workdir, every_steps=run.checkpoint.every_steps,
                                            keep=run.checkpoint.keep, async_save=run.checkpoint.async_save,
                                            verify=run.checkpoint.verify)
  state, start_step = checkpointing.restore_or_create(checkpointer, create, policy.variables, run_key, abstract,
                                                      shardings, trainable_keys, source=source,
                                                      batch_rows=run.batch.size, critic=critic)
  del policy, critic  # the state holds what is still needed

  # --- The jitted update ---------------------------------------------------------------------
  update = algorithm.make_update(model_config, lora, run, tx, trainable_keys, critic_tx)
  update = jax.jit(update, in_shardings=(shardings, batch_shardings(source.keys, mesh), replicated(mesh)),
                   out_shardings=(shardings, replicated(mesh)), donate_argnums=(0,))

  # --- The loop ------------------------------------------------------------------------------
  schedule = optimizer.learning_rate_schedule(run.optim, num_steps * steps_per_update)
  writer = MetricsWriter(workdir, run.log, config_json=config_json, resume_step=start_step, enabled=is_main)
  writer.write_text("config", f"```\n{schema.to_config_dict(run)}\n```")
  progress = Progress(num_steps, start_step, enabled=is_main and run.log.progress_bar, description=run.algorithm)
  try:
    with sigterm_flag() as preemption, sharding_context(mesh):
      ctx = loop.LoopContext(
          update=update, source=source, mesh=mesh, batch_rows=run.batch.size, num_steps=num_steps,
          trainable_keys=trainable_keys, checkpointer=checkpointer, writer=writer, progress=progress,
          preemption=preemption, config_json=config_json,
          flops_per_step=lambda seq_len: algorithm.step_flops(run, model_config, lora, seq_len),
          peak_flops_per_device=flops.peak_flops_per_device(run.log.peak_tflops, devices[0]),
          learning_rate=lambda step: float(schedule(step * steps_per_update)), log_every=run.log.every_steps)
      result = loop.run(ctx, state, start_step, halt_at_step=halt_at_step)
  finally:
    progress.close()
    writer.close()
    checkpointer.close()
  logging.info("%s at step %d of %d", result.status, result.step, num_steps)
  return result


def _summary(workdir: pathlib.Path, result: loop.RunResult, seconds: float) -> str:
  checkpoint = None
  if result.checkpoint_step is not None:
    checkpoint = checkpointing.checkpoint_dir(workdir).absolute() / str(result.checkpoint_step)
  lines = summary_lines(workdir.absolute(), read_records(workdir / JSONL), status=result.status, step=result.step,
                        num_steps=result.num_steps, steps_this_run=result.step - result.start_step, seconds=seconds,
                        checkpoint=checkpoint)
  return "\n".join(lines)


def failure_status(error: BaseException) -> int | None:
  """The exit status of a run that stopped with `error`, for the errors whose message says
  what happened and what to do (None for others: a bug, shown with its traceback)."""
  if isinstance(error, (checkpointing.CheckpointSaveError, MetricsWriteError)):
    return EXIT_SAVE_FAILED
  if isinstance(error, loop.NonFiniteError):
    return EXIT_NONFINITE
  if isinstance(error, (ValueError, OSError)):  # bad config values, data, paths: the message names the field or file
    return EXIT_BAD_INPUT
  return None


def run_main(argv: Sequence[str], algorithm: str, module: str) -> int:
  """The shared body of `python -m steptool_jax.train` and `python -m steptool_jax.sft`: the
  exit status (0, or EXIT_NONFINITE, EXIT_BAD_INPUT, EXIT_SAVE_FAILED) after one line on
  stderr for a failure."""
  quiet_startup()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError(f"--config is required, e.g. python -m {module} --config=configs/tiny.py"
                         + (":sft" if algorithm == "sft" else ""))
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required (checkpoints, metrics and caches go there)")
  workdir = pathlib.Path(os.path.expanduser(_WORKDIR.value))
  started = time.perf_counter()
  try:
    run = parse_run_config(config)
    if run.algorithm != algorithm:
      raise app.UsageError(f"algorithm: this config is for {run.algorithm!r}; run it with python -m"
                           f" {run.entry_point}")
    distributed.maybe_initialize(run.distributed)
    result = train_and_evaluate(run, workdir)
  except Exception as e:  # noqa: BLE001 (the errors a run reports in one line; others keep their traceback)
    status = failure_status(e)
    if status is None:
      raise
    print(f"error: {e}", file=sys.stderr)
    return distributed.fail(status)  # multi-process: at once, not after the 5-minute shutdown barrier
  if jax.process_index() == 0:
    print(_summary(workdir, result, time.perf_counter() - started), flush=True)
  return 0


def main(argv: Sequence[str]) -> None:
  sys.exit(run_main(argv, "ppo", "steptool_jax.train"))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
