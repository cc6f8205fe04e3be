"""Orbax checkpoints of a run: `WORKDIR/checkpoints/<step>/{policy,train_state,progress,config}`.

* `policy`: the trainable policy collections (`{"lora", "value_head"}` with LoRA, else
  `{"params", "value_head"}`; SFT leaves out the value head). Frozen weights (the base model
  under LoRA, the reference copy) are not saved: they are rebuilt from the run's model
  source (`model.path`, `model.init_from` or the seeded random init), which the saved config
  names. `python -m steptool_jax.export --checkpoint=WORKDIR/checkpoints/<step>/policy
  --params_key= --base_model=...` turns this item into a Hugging Face directory.
* `train_state`: optimizer state, step, KL coefficient and the run's RNG key data.
* `progress`: the data position (epoch, batch index) and what the data looked like.
* `config`: the resolved config as JSON.

Saves are asynchronous (the device-to-host copy happens before `save` returns, so the
next step may donate the state's buffers), every `every_steps` steps plus on demand
(`force=True`: the end of the run, SIGTERM). Only the newest `keep` are kept. Restores
write straight into the target shardings of the current mesh, which may differ from the
mesh that saved.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers

from steptool_jax.config import schema
from steptool_jax.config.run import RunConfig, parse_run_config
from steptool_jax.parallel.sharding import sharded_abstract
from steptool_jax.trainer.state import TrainState

CHECKPOINT_DIR = "checkpoints"
ITEMS = ("policy", "train_state", "progress", "config")


# TrainState fields saved in `train_state` when the run has them (a separate critic, running
# reward statistics); runs without them save (and restore) exactly the older layout.
OPTIONAL_STATE = ("critic", "critic_opt_state", "reward_stats")


def saved_parts(state: TrainState, trainable_keys: tuple[str, ...]) -> dict[str, Any]:
  """The two array items of a checkpoint (works on states of arrays, abstracts or shardings)."""
  train_state = {"step": state.step, "opt_state": state.opt_state, "kl_coef": state.kl.value, "rng": state.rng}
  train_state.update({name: getattr(state, name) for name in OPTIONAL_STATE if getattr(state, name) is not None})
  return {"policy": {k: state.policy[k] for k in trainable_keys}, "train_state": train_state}


def checkpoint_dir(workdir: str | os.PathLike[str]) -> pathlib.Path:
  return pathlib.Path(workdir) / CHECKPOINT_DIR


class Checkpointer:
  """A run's `CheckpointManager` with the item layout above."""

  def __init__(self, workdir: str | os.PathLike[str], *, every_steps: int = 100, keep: int = 3,
               async_save: bool = True, read_only: bool = False):
    options = ocp.CheckpointManagerOptions(
        save_decision_policy=checkpoint_managers.FixedIntervalPolicy(every_steps),
        preservation_policy=checkpoint_managers.LatestN(keep),
        enable_async_checkpointing=async_save, create=not read_only, read_only=read_only)
    self.directory = checkpoint_dir(workdir)
    self.manager = ocp.CheckpointManager(self.directory.absolute(), options=options, item_names=ITEMS)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: TrainState, trainable_keys: tuple[str, ...], *, progress: Mapping[str, Any],
           config: Mapping[str, Any], force: bool = False) -> bool:
    """Saves when the interval says so (or `force`); True when a save was started."""
    parts = saved_parts(state, trainable_keys)
    return self.manager.save(step, args=ocp.args.Composite(
        policy=ocp.args.StandardSave(parts["policy"]),
        train_state=ocp.args.StandardSave(parts["train_state"]),
        progress=ocp.args.JsonSave(dict(progress)),
        config=ocp.args.JsonSave(dict(config))), force=force)

  def restore(self, step: int, target: Mapping[str, Any]) -> dict[str, Any]:
    """Items `policy` and `train_state` into `target` (abstract arrays with shardings),
    plus `progress` and `config`."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        policy=ocp.args.StandardRestore(target["policy"]),
        train_state=ocp.args.StandardRestore(target["train_state"]),
        progress=ocp.args.JsonRestore(), config=ocp.args.JsonRestore()))
    return {name: restored[name] for name in ITEMS}

  def restore_policy(self, step: int, target: Any) -> Any:
    """Only the `policy` item (to start another run from this one)."""
    return self.manager.restore(step, args=ocp.args.Composite(policy=ocp.args.StandardRestore(target)))["policy"]

  def read_config(self, step: int) -> dict[str, Any]:
    return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def restore_into(state_template: TrainState, restored: Mapping[str, Any]) -> TrainState:
  """A state whose saved parts come from a checkpoint and the rest (frozen policy
  collections, the reference) from `state_template`."""
  train = restored["train_state"]
  return state_template.replace(
      step=train["step"], policy={**state_template.policy, **restored["policy"]}, opt_state=train["opt_state"],
      kl=state_template.kl.replace(value=train["kl_coef"]), rng=train["rng"],
      **{name: train[name] for name in OPTIONAL_STATE if name in train})


def is_run_directory(path: str | os.PathLike[str]) -> bool:
  """A workdir of ours (it has checkpoints), as opposed to a Hugging Face model directory."""
  return checkpoint_dir(path).is_dir() and not (pathlib.Path(path) / "config.json").is_file()


def config_json(config: RunConfig) -> dict[str, Any]:
  """A run config as plain JSON values (tuples become lists), as saved with every checkpoint."""
  return json.loads(json.dumps(schema.to_plain(config), sort_keys=True))


@contextlib.contextmanager
def latest_checkpoint(workdir: str | os.PathLike[str], *, field: str = "") -> Iterator[tuple[Checkpointer, int]]:
  """A read-only `Checkpointer` of one of our runs and its latest step (closed afterwards).

  Raises:
    ValueError: the workdir has no checkpoint (prefixed with `field`, the setting that named it).
  """
  checkpointer = Checkpointer(workdir, read_only=True)
  try:
    step = checkpointer.latest_step()
    if step is None:
      raise ValueError(f"{field + ': ' if field else ''}no checkpoint under {checkpoint_dir(workdir)}")
    yield checkpointer, int(step)
  finally:
    checkpointer.close()


def read_run_config(checkpointer: Checkpointer, step: int) -> RunConfig:
  """The typed config a checkpoint was saved with (configs of older versions migrate)."""
  return parse_run_config(checkpointer.read_config(step))


def restore_or_create(checkpointer: Checkpointer, create: Callable[..., TrainState], policy: Any,
                      rng: jax.Array, abstract: TrainState, shardings: TrainState, trainable_keys: tuple[str, ...],
                      *, source: Any, batch_rows: int, critic: Any = None) -> tuple[TrainState, int]:
  """`(state, step)`: the latest checkpoint's state, or a fresh one at step 0.

  Either way the state lands directly in `shardings`. A fresh state is `create(policy,
  rng, critic)` under jit (`critic`: a separate critic's starting variables, or None); a restored one reads the saved parts straight into their shardings and
  takes the frozen parts (the base under LoRA, the reference copy) from `policy`, the
  run's rebuilt starting point. The data must be the data that run saw (same rows and
  batch size), or the resumed run would not continue it.
  """
  step = checkpointer.latest_step()
  if step is None:
    return jax.jit(create, out_shardings=shardings)(policy, rng, critic), 0
  target = sharded_abstract(saved_parts(abstract, trainable_keys), saved_parts(shardings, trainable_keys))
  restored = checkpointer.restore(step, target)
  progress = restored["progress"]
  if (progress["data_rows"], progress["batch_rows"]) != (source.num_rows, batch_rows):
    raise ValueError(
        f"data: the checkpoint at step {step} in {checkpointer.directory} was trained on {progress['data_rows']} rows"
        f" in batches of {progress['batch_rows']}, this run has {source.num_rows} rows in batches of {batch_rows};"
        " resuming would not continue that run (use a new --workdir)")
  # The frozen parts are rebuilt as the first run built them; the saved ones come from disk.
  frozen = {k: v for k, v in policy.items() if k not in trainable_keys}
  frozen = jax.device_put(frozen, {k: shardings.policy[k] for k in frozen})
  reference = None
  if abstract.reference is not None:
    reference = jax.jit(lambda params: jax.tree.map(jnp.copy, params), out_shardings=shardings.reference)(
        policy["params"])
  state = restore_into(abstract.replace(policy=frozen, reference=reference), restored)
  logging.info("resumed from %s/%d (epoch %d, batch %d)", checkpointer.directory, step, progress["epoch"],
               progress["batch_index"])
  return state, int(step)
