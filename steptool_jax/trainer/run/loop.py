"""The training loop PPO and SFT share: batches in, jitted updates, metrics, checkpoints.

Per step: this process's rows of the step's batch (a pure function of the step, and for
online rollouts of the policy too), one call of the jitted update (the next batch is
collated on the host while it runs; online, it is played by the updated policy, so it waits
for the update), then the metrics come back and are checked before anything else happens:

* a non-finite loss, gradient norm or parameter stops the run with `NonFiniteError`
  before any checkpoint of that state is written (the last checkpoint stays the last
  good one);
* metrics go to the writers (JSONL, TensorBoard, W&B) and the progress bar;
* a checkpoint is saved every `checkpoint.every_steps` steps, at the end, and when SIGTERM
  arrived (then the run returns with `status="preempted"`, and the process exits 0);
* a checkpoint save that failed in the background (disk full, permission) raises
  `CheckpointSaveError` at the end of the next step: the run stops there, the checkpoints
  before the failed one intact.

The step's RNG is `fold_in(run key, step)`, so a resumed run draws exactly what an
uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh

from steptool_jax.parallel.sharding import replicated
from steptool_jax.trainer.run.checkpointing import Checkpointer
from steptool_jax.trainer.run.metrics import MetricsWriter, scalar_metrics
from steptool_jax.trainer.run.preemption import PreemptionFlag
from steptool_jax.trainer.run.progress import Progress
from steptool_jax.trainer.sources.batches import DataSource, device_batch
from steptool_jax.trainer.state import TrainState


class NonFiniteError(RuntimeError):
  """The update produced NaN or inf; nothing from that step was checkpointed."""


@dataclasses.dataclass
class RunResult:
  state: TrainState
  step: int  # updates done
  status: str  # finished | preempted | halted
  last_metrics: dict[str, float]
  num_steps: int = 0  # the run's length
  start_step: int = 0  # where this process started (resumed from)
  checkpoint_step: int | None = None  # the newest checkpoint when the run returned


@dataclasses.dataclass
class LoopContext:
  """What the loop needs besides the state: static for the whole run."""

  update: Callable[[TrainState, Mapping[str, jax.Array], jax.Array], tuple[TrainState, Any]]
  source: DataSource
  mesh: Mesh
  batch_rows: int  # global rows per batch
  num_steps: int
  trainable_keys: tuple[str, ...]
  checkpointer: Checkpointer
  writer: MetricsWriter
  progress: Progress
  preemption: PreemptionFlag
  config_json: Mapping[str, Any]
  flops_per_step: Callable[..., float]  # seq_len=padded width -> model FLOPs of one step
  peak_flops_per_device: float | None
  learning_rate: Callable[[int], float]  # step -> learning rate of that step's (first) optimizer step
  log_every: int = 1


def data_position(step: int, steps_per_epoch: int) -> tuple[int, int]:
  """(epoch, batch index within it) of the batch step `step` reads."""
  return divmod(step, steps_per_epoch)


def progress_record(step: int, source: DataSource, batch_rows: int) -> dict[str, Any]:
  epoch, index = data_position(step, source.steps_per_epoch)
  return {"step": step, "epoch": epoch, "batch_index": index, "data_rows": source.num_rows,
          "batch_rows": batch_rows, "steps_per_epoch": source.steps_per_epoch}


def run(ctx: LoopContext, state: TrainState, start_step: int, *, halt_at_step: int | None = None) -> RunResult:
  """Runs steps `start_step .. num_steps - 1`; see the module docstring.

  `halt_at_step` (tests) returns after that step as if the process had been killed there:
  no extra checkpoint, so a later run resumes from the last periodic one.

  Raises:
    NonFiniteError: the update produced NaN or inf.
    checkpointing.CheckpointSaveError: a checkpoint could not be written.
  """
  # The step's key is made on the mesh (replicated), so every process passes the same
  # global array to the update.
  step_key = jax.jit(lambda key_data, step: jax.random.fold_in(jax.random.wrap_key_data(key_data), step),
                     out_shardings=replicated(ctx.mesh))
  step = start_step
  last: dict[str, float] = {}
  saved_step = start_step
  status = "finished"

  def batch_for(step: int, policy: Any) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The step's batch and the source's statistics of it (rollout pass rate, ...)."""
    return ctx.source.batch(*data_position(step, ctx.source.steps_per_epoch), policy)

  local, local_stats = batch_for(step, state.policy) if step < ctx.num_steps else (None, {})
  first = True
  while step < ctx.num_steps:
    batch = device_batch(local, ctx.mesh, ctx.batch_rows)
    width = local["input_ids"].shape[1]
    batch_stats = local_stats
    started = time.perf_counter()
    state, metrics = ctx.update(state, batch, step_key(state.rng, step))
    # Overlaps with the device for fixed data; online rollouts need the updated policy.
    local, local_stats = batch_for(step + 1, state.policy) if step + 1 < ctx.num_steps else (None, {})
    metrics = {**scalar_metrics(jax.device_get(metrics)), **batch_stats}
    seconds = time.perf_counter() - started
    step += 1

    if metrics.pop("nonfinite", 0.0):
      bad = sorted(k for k, v in metrics.items() if not np.isfinite(v))
      ctx.writer.write(step, {**metrics, "nonfinite": 1.0})
      message = (f"step {step}: non-finite values after the update (metrics {bad or 'finite; parameters are not'});"
                 f" stopping without checkpointing it, the last checkpoint is step {ctx.checkpointer.latest_step()}")
      logging.error(message)
      raise NonFiniteError(message)

    metrics["learning_rate"] = ctx.learning_rate(step - 1)
    metrics.update(_performance(metrics, seconds, ctx.flops_per_step(seq_len=width), ctx.mesh.devices.size,
                                ctx.peak_flops_per_device, compiled_this_step=first))
    first = False
    last = metrics
    if step % ctx.log_every == 0 or step == ctx.num_steps:
      ctx.writer.write(step, metrics)
    ctx.progress.update(metrics)
    # A background save that failed stops the run here, one step after it started.
    ctx.checkpointer.check()

    record = progress_record(step, ctx.source, ctx.batch_rows)
    if ctx.preemption.requested():
      ctx.checkpointer.save(step, state, ctx.trainable_keys, progress=record, config=ctx.config_json, force=True)
      saved_step = step
      status = "preempted"
      logging.warning("step %d: SIGTERM received; checkpoint saved, stopping", step)
      break
    if ctx.checkpointer.save(step, state, ctx.trainable_keys, progress=record, config=ctx.config_json):
      saved_step = step
    if halt_at_step is not None and step >= halt_at_step:
      status = "halted"
      break

  if status == "finished" and saved_step != step:
    ctx.checkpointer.save(step, state, ctx.trainable_keys, progress=progress_record(step, ctx.source, ctx.batch_rows),
                          config=ctx.config_json, force=True)
  ctx.checkpointer.wait()
  return RunResult(state=state, step=step, status=status, last_metrics=last, num_steps=ctx.num_steps,
                   start_step=start_step,
                   checkpoint_step=ctx.checkpointer.latest_step())


def _performance(metrics: Mapping[str, float], seconds: float, flops: float, devices: int,
                 peak: float | None, *, compiled_this_step: bool) -> dict[str, float]:
  """Throughput of the step; the first step of a process includes compilation."""
  if compiled_this_step:
    return {"perf/first_step_seconds": seconds}
  out = {"perf/step_seconds": seconds, "perf/tokens_per_s": metrics.get("tokens", 0.0) / seconds,
         "perf/tflops_per_device": flops / seconds / devices / 1e12}
  if peak is not None:
    out["perf/mfu"] = flops / (seconds * devices * peak)
  return out
