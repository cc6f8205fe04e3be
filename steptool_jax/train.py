r"""Step-grained PPO (StepTool), sharded over a device mesh.

    python -m steptool_jax.train --config=configs/tiny.py --workdir=/tmp/steptool-tiny
    python -m steptool_jax.train --config=configs/llama.py --workdir=gs://... \
        --config.model.path=/ckpt/Llama-3.1-8B-Instruct --config.data.train_path=/data/train.tsv

Top to bottom: config -> distributed runtime -> mesh -> data -> policy -> train state
(restored from WORKDIR when it has checkpoints) -> one jitted, donated
`update(state, batch, rng)` -> the loop (progress, metrics, checkpoints, SIGTERM).
`train_and_evaluate` is the same run as a function (tests call it in-process); it also
runs supervised fine-tuning when `config.algorithm == "sft"` (`python -m steptool_jax.sft`).
"""

from __future__ import annotations

import functools
import json
import logging as pylogging
import os
import pathlib
import sys
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from steptool_jax.cli import parse_flags
from steptool_jax.parallel import make_mesh, replicated, sharding_context, spec_sharding
from steptool_jax.rl.kl_controller import adaptive_kl_controller, fixed_kl_controller
from steptool_jax.trainer import checkpointing, config_checks, distributed, flops, loop, optimizer, policy_init
from steptool_jax.trainer.data_source import BATCH_AXES, batch_keys, make_data_source
from steptool_jax.trainer.online_source import OnlineSource
from steptool_jax.trainer.metrics import MetricsWriter
from steptool_jax.trainer.ppo_update import PPOSettings, make_ppo_update
from steptool_jax.trainer.preemption import sigterm_flag
from steptool_jax.trainer.progress import Progress
from steptool_jax.trainer.sft_update import SFTSettings, make_sft_update
from steptool_jax.trainer.state import create_train_state, state_shardings
from steptool_jax.trainer.tokenizer import load_tokenizer

RESOLVED_CONFIG = "train_config.json"

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/tiny.py[:variant].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, caches. Resumes if it has"
                               " checkpoints.")


def kl_controller(reward: ml_collections.ConfigDict):
  if reward.kl_controller == "adaptive":
    return adaptive_kl_controller(reward.init_kl_coef, reward.kl_target, reward.kl_horizon)
  return fixed_kl_controller(reward.init_kl_coef)


def optimizer_steps_per_update(config: ml_collections.ConfigDict) -> int:
  if config.algorithm == "sft":
    return 1
  return config.ppo.epochs * config.batch.size // (config.batch.minibatch_size * config.batch.grad_accum_steps)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike[str], *,
                       devices: Sequence[jax.Device] | None = None,
                       halt_at_step: int | None = None) -> loop.RunResult:
  """Trains (PPO or SFT, by `config.algorithm`) in `workdir`, resuming from its checkpoints.

  `devices` (default: all) are the devices of the mesh. `halt_at_step` (tests) stops after
  that step as if the process had been killed: no checkpoint beyond the periodic ones.

  Raises:
    ValueError: a bad config value (names the field), before any work is done.
    loop.NonFiniteError: the loss, a gradient or a parameter became NaN/inf.
  """
  # --- Config --------------------------------------------------------------------------------
  workdir = pathlib.Path(workdir)
  devices = list(jax.devices() if devices is None else devices)
  mesh_sizes = config_checks.validate(config, num_devices=len(devices), process_count=jax.process_count())
  config_json = checkpointing.config_json(config)
  is_main = jax.process_index() == 0
  if is_main:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / RESOLVED_CONFIG).write_text(json.dumps(config_json, indent=1, sort_keys=True) + "\n")
    logging.info("resolved config:\n%s", config)

  # --- Mesh ----------------------------------------------------------------------------------
  mesh = make_mesh(mesh_sizes, devices)
  logging.info("mesh %s over %d devices (%s)", dict(mesh.shape), mesh.devices.size, devices[0].device_kind)

  # --- Data ----------------------------------------------------------------------------------
  tokenizer = load_tokenizer(config)
  cache_dir = pathlib.Path(os.path.expanduser(config.data.cache_dir)) if config.data.cache_dir else workdir / "cache"
  source = make_data_source(config, tokenizer, cache_dir=cache_dir, mesh=mesh)
  num_steps = config.train.num_steps or config.train.num_epochs * source.steps_per_epoch
  logging.info("data: %s; %d steps per epoch, %d steps", source.counters, source.steps_per_epoch, num_steps)

  # --- Policy --------------------------------------------------------------------------------
  policy = policy_init.initial_policy(config, len(tokenizer), mesh)
  model_config, lora = policy.config, policy.lora
  if isinstance(source, OnlineSource):  # rollouts generate with the policy's architecture
    source = source.for_model(model_config, lora)
  logging.info("policy: %.1fM parameters, LoRA %s", model_config.num_params() / 1e6, lora)

  # --- Train state ---------------------------------------------------------------------------
  steps_per_update = optimizer_steps_per_update(config)
  tx = optimizer.make_optimizer(config.optim, num_steps * steps_per_update)
  trainable_keys = optimizer.trainable_collections(config)
  create = functools.partial(create_train_state, optimizer=tx, trainable_keys=trainable_keys,
                             kl=kl_controller(config.reward), master_dtype=jnp.dtype(config.model.master_dtype),
                             keep_reference=lora is None and config.algorithm == "ppo")
  run_key = policy_init.seed_key(config, policy_init.RUN_STREAM)
  abstract = jax.eval_shape(create, policy.variables, run_key)
  shardings = state_shardings(abstract, model_config=model_config, lora=lora, mesh=mesh, optimizer=tx,
                              trainable_keys=trainable_keys)
  checkpointer = checkpointing.Checkpointer(workdir, every_steps=config.checkpoint.every_steps,
                                            keep=config.checkpoint.keep, async_save=config.checkpoint.async_save)
  state, start_step = checkpointing.restore_or_create(checkpointer, create, policy.variables, run_key, abstract,
                                                      shardings, trainable_keys, source=source,
                                                      batch_rows=config.batch.size)
  del policy  # the state holds what is still needed

  # --- The jitted update ---------------------------------------------------------------------
  if config.algorithm == "ppo":
    update = make_ppo_update(model_config, lora, PPOSettings.from_config(config), tx, trainable_keys)
    step_flops = functools.partial(flops.ppo_update_flops, model_config, lora, rows=config.batch.size,
                                   epochs=config.ppo.epochs)
  else:
    update = make_sft_update(model_config, lora, SFTSettings.from_config(config), tx, trainable_keys)
    step_flops = functools.partial(flops.sft_step_flops, model_config, lora, rows=config.batch.size)
  batch_shardings = {key: spec_sharding(BATCH_AXES[key], mesh) for key in batch_keys(config)}
  update = jax.jit(update, in_shardings=(shardings, batch_shardings, replicated(mesh)),
                   out_shardings=(shardings, replicated(mesh)), donate_argnums=(0,))

  # --- The loop ------------------------------------------------------------------------------
  schedule = optimizer.learning_rate_schedule(config.optim, num_steps * steps_per_update)
  writer = MetricsWriter(workdir, config.log, config_json=config_json, resume_step=start_step, enabled=is_main)
  writer.write_text("config", f"```\n{config}\n```")
  progress = Progress(num_steps, start_step, enabled=is_main and config.log.progress_bar,
                      description=config.algorithm)
  try:
    with sigterm_flag() as preemption, sharding_context(mesh):
      ctx = loop.LoopContext(
          update=update, source=source, mesh=mesh, batch_rows=config.batch.size, num_steps=num_steps,
          trainable_keys=trainable_keys, checkpointer=checkpointer, writer=writer, progress=progress,
          preemption=preemption, config_json=config_json, flops_per_step=step_flops,
          peak_flops_per_device=flops.peak_flops_per_device(config.log.peak_tflops, devices[0]),
          learning_rate=lambda step: float(schedule(step * steps_per_update)), log_every=config.log.every_steps)
      result = loop.run(ctx, state, start_step, halt_at_step=halt_at_step)
  finally:
    progress.close()
    writer.close()
    checkpointer.close()
  logging.info("%s at step %d of %d", result.status, result.step, num_steps)
  return result


class _QuietLibraries(pylogging.Filter):
  """Drops INFO lines of Orbax (a dozen per checkpoint); its warnings and errors stay."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    return record.levelno > pylogging.INFO or "/orbax/" not in record.pathname


def run_main(argv: Sequence[str], algorithm: str, module: str) -> int:
  """The shared body of `python -m steptool_jax.train` and `python -m steptool_jax.sft`."""
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError(f"--config is required, e.g. python -m {module} --config=configs/tiny.py"
                         + (":sft" if algorithm == "sft" else ""))
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required (checkpoints, metrics and caches go there)")
  if config.algorithm != algorithm:
    other = "steptool_jax.sft" if config.algorithm == "sft" else "steptool_jax.train"
    raise app.UsageError(f"algorithm: this config is for {config.algorithm!r}; run it with python -m {other}")
  distributed.maybe_initialize(config.distributed)
  try:
    result = train_and_evaluate(config, _WORKDIR.value)
  except ValueError as e:  # bad config values and data: the message names the field or file
    logging.exception("stopped")
    print(f"error: {e}", file=sys.stderr)
    return 2
  except loop.NonFiniteError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  if result.status == "preempted":
    print(f"preempted at step {result.step}: checkpoint saved in {_WORKDIR.value}; run again to resume")
  return 0


def main(argv: Sequence[str]) -> None:
  sys.exit(run_main(argv, "ppo", "steptool_jax.train"))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
