"""The training loop with a fake update and data source: batches in step order (online: read
with the updated policy), the step keys, metrics written, periodic and final checkpoints, a
non-finite step stopping the run without its checkpoint, halting, resuming and SIGTERM."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from steptool_jax.config.run import LogSection
from steptool_jax.parallel import make_mesh, replicated
from steptool_jax.rl.kl_controller import fixed_kl_controller
from steptool_jax.trainer.run import checkpointing, loop
from steptool_jax.trainer.run.metrics import JSONL, MetricsWriter
from steptool_jax.trainer.run.preemption import PreemptionFlag
from steptool_jax.trainer.run.progress import Progress
from steptool_jax.trainer.state import TrainState

MESH = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
ROWS, WIDTH, TOKENS = 2, 4, 8.0
KEYS = ("params",)
RUN_KEY = jax.random.key(4)
FLOPS_PER_TOKEN_OF_WIDTH = 1e9
PEAK = 1e12
CONFIG = {"algorithm": "fake"}


@dataclasses.dataclass
class FakeSource:
  """3 batches per epoch; batch (epoch, index) is filled with 10 * epoch + index."""

  keys: tuple[str, ...] = ("input_ids", "attention_mask")
  num_rows: int = 6
  steps_per_epoch: int = 3
  counters: dict = dataclasses.field(default_factory=dict)
  calls: list = dataclasses.field(default_factory=list)

  def batch(self, epoch, index, policy_variables):
    self.calls.append((epoch, index, float(policy_variables["params"]["w"])))
    value = 10 * epoch + index
    return ({"input_ids": np.full((ROWS, WIDTH), value, np.int32), "attention_mask": np.ones((ROWS, WIDTH), np.int32)},
            {"source/value": float(value)})


def fake_update(nonfinite_at: int | None = None):
  """w += the batch's value; loss = the value (NaN and flagged at step `nonfinite_at`)."""
  seen = []

  def update(state, batch, rng):
    value = int(np.asarray(batch["input_ids"])[0, 0])
    seen.append((int(state.step), value, np.asarray(jax.random.key_data(rng))))
    step = int(state.step) + 1
    bad = step == nonfinite_at
    new = state.replace(step=state.step + 1, policy={"params": {"w": state.policy["params"]["w"] + value}})
    return new, {"loss": jnp.float32(math.nan if bad else value), "tokens": jnp.float32(TOKENS),
                 "nonfinite": jnp.float32(bad)}

  return update, seen


def fresh_state(step: int = 0, w: float = 0.0) -> TrainState:
  return TrainState(step=jnp.int32(step), policy={"params": {"w": jnp.float32(w)}},
                    opt_state={"count": jnp.int32(0)}, kl=fixed_kl_controller(0.1),
                    rng=jax.random.key_data(RUN_KEY))


def context(workdir, update, source, *, num_steps, every_steps, preemption=None, log_every=1, start_step=0):
  return loop.LoopContext(
      update=update, source=source, mesh=MESH, batch_rows=ROWS, num_steps=num_steps, trainable_keys=KEYS,
      checkpointer=checkpointing.Checkpointer(workdir, every_steps=every_steps, keep=10, async_save=False),
      writer=MetricsWriter(workdir, LogSection(tensorboard=False), resume_step=start_step),
      progress=Progress(num_steps, start_step, enabled=False), preemption=preemption or PreemptionFlag(),
      config_json=CONFIG, flops_per_step=lambda seq_len: FLOPS_PER_TOKEN_OF_WIDTH * seq_len,
      peak_flops_per_device=PEAK, learning_rate=lambda step: 0.1 * step, log_every=log_every)


def close(ctx):
  ctx.writer.close()
  ctx.checkpointer.close()


def read_jsonl(workdir) -> list[dict]:
  return [json.loads(line) for line in (workdir / JSONL).read_text().splitlines()]


def saved_steps(workdir) -> list[int]:
  checkpointer = checkpointing.Checkpointer(workdir, read_only=True)
  steps = checkpointer.all_steps()
  checkpointer.close()
  return sorted(steps)


def step_key_data(step: int) -> np.ndarray:
  return np.asarray(jax.random.key_data(jax.random.fold_in(RUN_KEY, step)))


def test_a_run_reads_batches_in_order_writes_metrics_and_checkpoints(tmp_path):
  update, seen = fake_update()
  source = FakeSource()
  ctx = context(tmp_path, update, source, num_steps=5, every_steps=2)
  result = loop.run(ctx, fresh_state(), 0)
  close(ctx)
  values = [0, 1, 2, 10, 11]  # positions (0, 0) (0, 1) (0, 2) (1, 0) (1, 1)
  assert (result.status, result.step, result.start_step, result.num_steps, result.checkpoint_step) == (
      "finished", 5, 0, 5, 5)
  assert float(result.state.policy["params"]["w"]) == sum(values)
  # Each batch is read with the policy that the step before it produced.
  assert source.calls == [(0, 0, 0.0), (0, 1, 0.0), (0, 2, 1.0), (1, 0, 3.0), (1, 1, 13.0)]
  assert [(s, v) for s, v, _ in seen] == list(enumerate(values))
  for step, _, key in seen:
    np.testing.assert_array_equal(key, step_key_data(step))  # fold_in(run key, step)

  records = read_jsonl(tmp_path)
  assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
  for record, value in zip(records, values):
    assert record["loss"] == value and record["source/value"] == value  # the stats of the batch it trained on
    assert record["learning_rate"] == pytest.approx(0.1 * (record["step"] - 1)) and "nonfinite" not in record
  assert "perf/first_step_seconds" in records[0] and "perf/step_seconds" not in records[0]
  for record in records[1:]:
    seconds = record["perf/step_seconds"]
    assert record["perf/tokens_per_s"] == pytest.approx(TOKENS / seconds)
    assert record["perf/tflops_per_device"] == pytest.approx(FLOPS_PER_TOKEN_OF_WIDTH * WIDTH / seconds / 1e12)
    assert record["perf/mfu"] == pytest.approx(FLOPS_PER_TOKEN_OF_WIDTH * WIDTH / seconds / PEAK)
  assert result.last_metrics["loss"] == 11.0

  assert saved_steps(tmp_path) == [2, 4, 5]  # every 2 steps, and the end
  checkpointer = checkpointing.Checkpointer(tmp_path, read_only=True)
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated(MESH)),
                        checkpointing.saved_parts(fresh_state(), KEYS))
  restored = checkpointer.restore(4, target)
  checkpointer.close()
  assert float(restored["policy"]["params"]["w"]) == sum(values[:4]) and int(restored["train_state"]["step"]) == 4
  assert restored["progress"] == {"step": 4, "epoch": 1, "batch_index": 1, "data_rows": 6, "batch_rows": ROWS,
                                  "steps_per_epoch": 3}
  assert restored["config"] == CONFIG


def test_a_non_finite_step_stops_the_run_without_its_checkpoint(tmp_path):
  update, _ = fake_update(nonfinite_at=3)
  ctx = context(tmp_path, update, FakeSource(), num_steps=5, every_steps=1)
  with pytest.raises(loop.NonFiniteError) as info:
    loop.run(ctx, fresh_state(), 0)
  close(ctx)
  assert str(info.value) == ("step 3: non-finite values after the update (metrics ['loss']); stopping without"
                             " checkpointing it, the last checkpoint is step 2")
  assert saved_steps(tmp_path) == [1, 2]
  last = read_jsonl(tmp_path)[-1]
  assert (last["step"], last["nonfinite"], last["loss"]) == (3, 1.0, "nan")


def test_halt_at_step_returns_without_an_extra_checkpoint(tmp_path):
  update, _ = fake_update()
  ctx = context(tmp_path, update, FakeSource(), num_steps=5, every_steps=2)
  result = loop.run(ctx, fresh_state(), 0, halt_at_step=3)
  close(ctx)
  assert (result.status, result.step, result.checkpoint_step) == ("halted", 3, 2)
  assert saved_steps(tmp_path) == [2]
  assert [r["step"] for r in read_jsonl(tmp_path)] == [1, 2, 3]


def test_a_resumed_run_continues_at_its_data_position_and_keys(tmp_path):
  update, seen = fake_update()
  source = FakeSource()
  ctx = context(tmp_path, update, source, num_steps=4, every_steps=2, start_step=2)
  result = loop.run(ctx, fresh_state(step=2, w=1.0), 2)
  close(ctx)
  assert [(e, i) for e, i, _ in source.calls] == [(0, 2), (1, 0)]
  assert [(s, v) for s, v, _ in seen] == [(2, 2), (3, 10)]
  np.testing.assert_array_equal(seen[0][2], step_key_data(2))
  assert (result.status, result.step, result.start_step) == ("finished", 4, 2)
  assert saved_steps(tmp_path) == [4]  # the last step was a periodic save: no second one
  assert [r["step"] for r in read_jsonl(tmp_path)] == [3, 4]


def test_sigterm_saves_and_returns_preempted(tmp_path):
  update, _ = fake_update()
  flag = PreemptionFlag()
  flag.set()
  ctx = context(tmp_path, update, FakeSource(), num_steps=5, every_steps=100, preemption=flag)
  result = loop.run(ctx, fresh_state(), 0)
  close(ctx)
  assert (result.status, result.step, result.checkpoint_step) == ("preempted", 1, 1)
  assert saved_steps(tmp_path) == [1]


def test_log_every_writes_every_nth_step_and_the_last(tmp_path):
  update, _ = fake_update()
  ctx = context(tmp_path, update, FakeSource(), num_steps=5, every_steps=100, log_every=2)
  loop.run(ctx, fresh_state(), 0)
  close(ctx)
  assert [r["step"] for r in read_jsonl(tmp_path)] == [2, 4, 5]
  assert saved_steps(tmp_path) == [5]


def test_data_position():
  assert [loop.data_position(step, 3) for step in range(7)] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2),
                                                                (2, 0)]
