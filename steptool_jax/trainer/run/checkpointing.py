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
* `steptool_manifest.json`: every file of the step with its size and CRC-32 (`integrity.py`).

The array items are whatever `saved_parts` returns (each becomes an item directory); nothing
below names them. Saves are asynchronous (the device-to-host copy happens before `save`
returns, so the next step may donate the state's buffers), every `every_steps` steps plus on
demand (`force=True`: the end of the run, SIGTERM). Only the newest `keep` are kept.

Integrity: each step is sealed with its manifest in Orbax's background thread, after the
files are written and before Orbax renames the step into place, so a committed step always
has one. A save that fails (disk full, permission) raises `CheckpointSaveError` at the next
`check()` (the loop calls it after every step), not one save later; the failed step is never
committed and the previous ones stay. A restore takes the newest step that verifies: its
manifest (sizes; checksums unless `checkpoint.verify` is off), Orbax reading it without
error, every floating-point array finite. A step that fails is logged with the reason and
moved to `WORKDIR/rejected_checkpoints/<step>` (so the resumed run can save that step again);
when no step verifies, `CheckpointError` names the directory and every step's reason.
Restores write straight into the target shardings of the current mesh, which may differ
from the mesh that saved.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import shutil
from typing import Any, Callable, Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers

from steptool_jax.config import schema
from steptool_jax.config.run import RunConfig, parse_run_config
from steptool_jax.parallel.sharding import sharded_abstract
from steptool_jax.trainer.run import integrity
from steptool_jax.trainer.state import TrainState

CHECKPOINT_DIR = "checkpoints"
REJECTED_DIR = "rejected_checkpoints"  # steps a restore skipped, kept for inspection
JSON_ITEMS = ("progress", "config")
READ_ITEMS = ("policy", "config")  # what evaluation, export and model.init_from read of a run


class CheckpointError(ValueError):
  """No checkpoint of the run can be restored; the message names the directory and, for
  every step, why it was skipped. (Exit status 2: the workdir is input the user must fix.)"""


class CheckpointSaveError(RuntimeError):
  """A checkpoint could not be written (disk full, permission, ...); the steps saved before
  it are intact. (Exit status 3.)"""


# TrainState fields saved in `train_state` when the run has them (a separate critic, running
# reward statistics); runs without them save (and restore) exactly the older layout.
OPTIONAL_STATE = ("critic", "critic_opt_state", "reward_stats")


def saved_parts(state: TrainState, trainable_keys: tuple[str, ...]) -> dict[str, Any]:
  """The array items of a checkpoint (works on states of arrays, abstracts or shardings)."""
  train_state = {"step": state.step, "opt_state": state.opt_state, "kl_coef": state.kl.value, "rng": state.rng}
  train_state.update({name: getattr(state, name) for name in OPTIONAL_STATE if getattr(state, name) is not None})
  return {"policy": {k: state.policy[k] for k in trainable_keys}, "train_state": train_state}


def checkpoint_dir(workdir: str | os.PathLike[str]) -> pathlib.Path:
  return pathlib.Path(workdir) / CHECKPOINT_DIR


def _anywhere(flag: bool) -> bool:
  """`flag` on any process (the same answer on all of them)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils  # noqa: PLC0415
  return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def _brief(error: BaseException, limit: int = 300) -> str:
  """`Type: first line` of an error and of its innermost cause, cut to `limit` characters."""
  causes = [error]
  while causes[-1].__cause__ is not None and len(causes) < 10:
    causes.append(causes[-1].__cause__)
  parts = []
  for e in (causes[0], causes[-1]) if len(causes) > 1 else causes:
    text = (str(e).strip().splitlines() or [""])[0]
    parts.append(f"{type(e).__name__}: {text}" if text else type(e).__name__)
  out = " <- ".join(parts)
  return out if len(out) <= limit else out[:limit] + "..."


def _os_cause(error: BaseException) -> str:
  """The operating system's reason behind a storage error ("No space left on device"), or "".

  Orbax's writes fail inside TensorStore, whose errors carry the errno as text
  (`[os_error_code='28']`) rather than as an `OSError`."""
  seen: list[BaseException] = []
  e: BaseException | None = error
  while e is not None and len(seen) < 10:
    seen.append(e)
    if isinstance(e, OSError) and e.strerror:
      return e.strerror
    e = e.__cause__ or e.__context__
  for e in seen:
    found = re.search(r"os_error_code='?(\d+)", str(e))
    if found:
      return os.strerror(int(found.group(1)))
  return ""


def _listing(names: list[str], limit: int = 5) -> str:
  return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


class Checkpointer:
  """A run's `CheckpointManager` with the layout, the seals and the checks above."""

  def __init__(self, workdir: str | os.PathLike[str], *, every_steps: int = 100, keep: int = 3,
               async_save: bool = True, read_only: bool = False, verify: bool = True):
    self.workdir = pathlib.Path(workdir)
    self.directory = checkpoint_dir(workdir)
    self.async_save = async_save
    self.read_only = read_only
    self.verify = verify
    self._pending: int | None = None  # the step whose save is in flight (sealed by `_seal`)
    self._failed = False  # a save failure was raised (close() does not raise it again)
    # Always Orbax's async checkpointer: its post-finalization callback is where a step gets
    # its manifest, before the commit. `async_save=False` waits for each save instead.
    options = ocp.CheckpointManagerOptions(
        save_decision_policy=checkpoint_managers.FixedIntervalPolicy(every_steps),
        preservation_policy=checkpoint_managers.LatestN(keep),
        enable_async_checkpointing=True, async_options=ocp.AsyncOptions(post_finalization_callback=self._seal),
        create=not read_only, read_only=read_only)
    self.manager = ocp.CheckpointManager(self.directory.absolute(), options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def step_dir(self, step: int) -> pathlib.Path:
    return self.directory / str(step)

  # --- saving ------------------------------------------------------------------------------

  def save(self, step: int, state: TrainState, trainable_keys: tuple[str, ...], *, progress: Mapping[str, Any],
           config: Mapping[str, Any], force: bool = False) -> bool:
    """Saves when the interval says so (or `force`); True when a save was started.

    Raises:
      CheckpointSaveError: this save, or the one before it, failed.
    """
    if not force and not self.manager.should_save(step):
      return False
    self.wait()  # the previous save is sealed (or its failure raised) before this one starts
    parts = saved_parts(state, trainable_keys)
    args = ocp.args.Composite(**{name: ocp.args.StandardSave(tree) for name, tree in parts.items()},
                              progress=ocp.args.JsonSave(dict(progress)), config=ocp.args.JsonSave(dict(config)))
    self._pending = step
    try:
      started = self.manager.save(step, args=args, force=force)
    except Exception as e:  # noqa: BLE001 (whatever the storage raised: the run cannot checkpoint)
      self._pending = None
      raise self._save_error(step, e) from None
    if not started:
      self._pending = None
    elif not self.async_save:
      self.wait()
    return started

  def _seal(self) -> None:
    """Orbax's post-finalization callback (its background thread, the primary process): the
    step's files are complete and still in the temporary directory; the manifest joins them."""
    step = self._pending
    if step is None:
      return
    temporary = self.directory.absolute() / f"{step}{ocp.utils.TMP_DIR_SUFFIX}"
    # Without a temporary directory (object stores: Orbax writes in place and commits with
    # a marker file) the step's own directory is the one to seal.
    integrity.write_manifest(temporary if temporary.is_dir() else self.step_dir(step).absolute(),
                             checksums=self.verify)

  def check(self) -> None:
    """Raises `CheckpointSaveError` when the save in flight has failed; returns at once while
    it is still running (call it after every step)."""
    if self._pending is None or _anywhere(self.manager.is_saving_in_progress()):
      return
    self.wait()

  def wait(self) -> None:
    """Blocks until the save in flight is committed.

    Raises:
      CheckpointSaveError: it failed (on any process).
    """
    step = self._pending
    error = None
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001 (the background save's error, re-raised by Orbax)
      error = e
    self._pending = None
    if _anywhere(error is not None) and step is not None:
      raise self._save_error(step, error)

  def _save_error(self, step: int, error: BaseException | None) -> CheckpointSaveError:
    """The error to raise for the failed save of `step`; its temporary files are removed
    (they will never be committed, and on a full disk they hold the space a retry needs)."""
    self._failed = True
    if jax.process_index() == 0:
      shutil.rmtree(self.directory / f"{step}{ocp.utils.TMP_DIR_SUFFIX}", ignore_errors=True)
    good = [s for s in self.all_steps() if s != step]
    last = f"step {good[-1]} ({self.step_dir(good[-1])})" if good else "none (no step was saved)"
    if error is None:
      cause = "it failed on another process (see its log)"
    else:
      reason = _os_cause(error)
      cause = f"{reason} ({_brief(error)})" if reason else _brief(error)
    return CheckpointSaveError(f"checkpoint: saving step {step} to {self.step_dir(step)} failed: {cause}. The last"
                               f" good checkpoint is {last}; free space or fix the permissions, then run the same"
                               " command to resume from it")

  def close(self) -> None:
    """Waits for the save in flight, then closes the manager (a failure already raised by
    `check`/`wait`/`save` is not raised again)."""
    reported = self._failed
    try:
      self.wait()
    except CheckpointSaveError:
      if not reported:
        raise
    finally:
      try:
        self.manager.close()
      except Exception:  # noqa: BLE001 (Orbax re-raising the failure it already reported)
        if not self._failed:
          raise

  # --- restoring ---------------------------------------------------------------------------

  def problem(self, step: int, items: Iterable[str] | None = None) -> str | None:
    """Why `step` must not be restored (its manifest does not verify for `items`), or None.

    A step without a manifest is accepted, with a warning, only when no older step has one:
    it was written before manifests existed. Otherwise its manifest was lost, and it is not.
    """
    step_dir = self.step_dir(step)
    if step_dir.is_dir() and not integrity.has_manifest(step_dir):
      sealed = [s for s in self.all_steps() if s < step and integrity.has_manifest(self.step_dir(s))]
      if sealed:
        return (f"no {integrity.MANIFEST}, though the older step {sealed[-1]} has one (it was removed, or the step"
                " was not written by this program)")
      logging.warning("checkpoint %s has no %s (written by an older version): its files cannot be verified",
                      step_dir, integrity.MANIFEST)
      return None
    return integrity.step_problem(step_dir, items=items, checksums=self.verify)

  def _agreed_problem(self, step: int, items: Iterable[str] | None) -> str | None:
    """`problem` as process 0 found it (only it reads the files), on every process."""
    if jax.process_count() == 1:
      return self.problem(step, items)
    from jax.experimental import multihost_utils  # noqa: PLC0415
    problem = self.problem(step, items) if jax.process_index() == 0 else None
    if multihost_utils.broadcast_one_to_all(np.int32(problem is not None)):
      return problem or "rejected by process 0 (see its log)"
    return None

  def _skip(self, step: int, problem: str) -> None:
    logging.warning("checkpoint %s skipped: %s", self.step_dir(step), problem)

  def _none_verifies(self, skipped: list[tuple[int, str]], field: str = "") -> CheckpointError:
    reasons = "; ".join(f"step {step}: {problem}" for step, problem in skipped)
    prefix = f"{field}: " if field else ""
    return CheckpointError(f"{prefix}no checkpoint under {self.directory} can be restored ({reasons}). Move the"
                           " damaged steps away to start over, or use a new --workdir")

  def restore_newest(self, target: Mapping[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """`(step, items)` of the newest step that verifies, or None when there is no step.

    `target` maps each array item to its abstract tree (with shardings); the JSON items come
    back too. Steps that fail are skipped (logged) and, newer than the one restored, moved to
    `WORKDIR/rejected_checkpoints/` so the run can save those steps again.

    Raises:
      CheckpointError: there are steps, and none verifies.
    """
    skipped: list[tuple[int, str]] = []
    for step in reversed(self.all_steps()):
      problem = self._agreed_problem(step, [*target, *JSON_ITEMS])
      restored = None
      if problem is None:
        try:
          restored = self.restore(step, target)
        except Exception as e:  # noqa: BLE001 (damaged files make Orbax raise anything)
          problem = f"Orbax cannot read it ({_brief(e)})"
        if _anywhere(problem is not None):
          problem = problem or "Orbax cannot read it on another process"
      if problem is None:
        bad = integrity.nonfinite_leaves({name: restored[name] for name in target})
        if bad:
          problem = f"non-finite values in {_listing(bad)}"
      if problem is None:
        self._set_aside(skipped)
        return step, restored
      self._skip(step, problem)
      skipped.append((step, problem))
    if skipped:
      raise self._none_verifies(skipped)
    return None

  def newest_verified_step(self, items: Iterable[str] = READ_ITEMS, *, field: str = "") -> int:
    """The newest step whose manifest verifies for `items` (reading a run, nothing moved).

    Raises:
      ValueError: there is no step at all.
      CheckpointError: none verifies.
    """
    skipped: list[tuple[int, str]] = []
    for step in reversed(self.all_steps()):
      problem = self._agreed_problem(step, items)
      if problem is None:
        return step
      self._skip(step, problem)
      skipped.append((step, problem))
    if skipped:
      raise self._none_verifies(skipped, field)
    raise ValueError(f"{field + ': ' if field else ''}no checkpoint under {self.directory}")

  def _set_aside(self, skipped: list[tuple[int, str]]) -> None:
    """Moves the skipped steps to `WORKDIR/rejected_checkpoints/<step>` (with why, in REJECTED.txt)."""
    if not skipped or self.read_only:
      return
    if jax.process_index() == 0:
      aside = self.workdir / REJECTED_DIR
      aside.mkdir(exist_ok=True)
      for step, problem in skipped:
        destination = aside / str(step)
        n = 1
        while destination.exists():
          destination, n = aside / f"{step}.{n}", n + 1
        shutil.move(self.step_dir(step), destination)
        (destination / "REJECTED.txt").write_text(f"{problem}\n", encoding="utf-8")
        logging.warning("moved the skipped checkpoint %s to %s (delete it when it is no longer wanted)",
                        self.step_dir(step), destination)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # noqa: PLC0415
      multihost_utils.sync_global_devices("steptool_jax: skipped checkpoints moved")
    self.manager.reload()

  def restore(self, step: int, target: Mapping[str, Any]) -> dict[str, Any]:
    """The array items of `target` (abstract arrays with shardings) and the JSON items, as
    Orbax reads them (no checks: `restore_newest` makes them)."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        **{name: ocp.args.StandardRestore(tree) for name, tree in target.items()},
        **{name: ocp.args.JsonRestore() for name in JSON_ITEMS}))
    return {name: restored[name] for name in (*target, *JSON_ITEMS)}

  def restore_policy(self, step: int, target: Any) -> Any:
    """Only the `policy` item (to start another run from this one, to evaluate or export it).

    Raises:
      CheckpointError: it holds NaN or inf (only possible when its files were damaged and
        `checkpoint.verify` was off: the loop never saves a non-finite state).
    """
    policy = self.manager.restore(step, args=ocp.args.Composite(policy=ocp.args.StandardRestore(target)))["policy"]
    bad = integrity.nonfinite_leaves(policy)
    if bad:
      raise CheckpointError(f"checkpoint {self.step_dir(step)}: non-finite values in the policy ({_listing(bad)})")
    return policy

  def read_config(self, step: int) -> dict[str, Any]:
    return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]


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
def latest_checkpoint(workdir: str | os.PathLike[str], *, field: str = "",
                      items: Iterable[str] = READ_ITEMS) -> Iterator[tuple[Checkpointer, int]]:
  """A read-only `Checkpointer` of one of our runs and its newest step whose manifest
  verifies for `items` (closed afterwards); damaged newer steps are skipped with a warning.

  Raises:
    ValueError: the workdir has no checkpoint, or (`CheckpointError`) none verifies; the
      message starts with `field`, the setting that named the workdir.
  """
  checkpointer = Checkpointer(workdir, read_only=True)
  try:
    yield checkpointer, checkpointer.newest_verified_step(items, field=field)
  finally:
    checkpointer.close()


def read_run_config(checkpointer: Checkpointer, step: int) -> RunConfig:
  """The typed config a checkpoint was saved with (configs of older versions migrate)."""
  return parse_run_config(checkpointer.read_config(step))


def restore_or_create(checkpointer: Checkpointer, create: Callable[..., TrainState], policy: Any,
                      rng: jax.Array, abstract: TrainState, shardings: TrainState, trainable_keys: tuple[str, ...],
                      *, source: Any, batch_rows: int, critic: Any = None) -> tuple[TrainState, int]:
  """`(state, step)`: the newest good checkpoint's state (`Checkpointer.restore_newest`), or
  a fresh one at step 0 when there is no checkpoint.

  Either way the state lands directly in `shardings`. A fresh state is `create(policy,
  rng, critic)` under jit (`critic`: a separate critic's starting variables, or None); a
  restored one reads the saved parts straight into their shardings and
  takes the frozen parts (the base under LoRA, the reference copy) from `policy`, the
  run's rebuilt starting point. The data must be the data that run saw (same rows and
  batch size), or the resumed run would not continue it.

  Raises:
    CheckpointError: there are checkpoints and none can be restored.
    ValueError: the checkpoint was trained on other data.
  """
  target = sharded_abstract(saved_parts(abstract, trainable_keys), saved_parts(shardings, trainable_keys))
  newest = checkpointer.restore_newest(target)
  if newest is None:
    return jax.jit(create, out_shardings=shardings)(policy, rng, critic), 0
  step, restored = newest
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
