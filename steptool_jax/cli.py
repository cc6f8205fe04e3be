"""What the command lines (`train`, `sft`, `evaluate`) share: flag parsing, quiet start-up, errors.

`app.run(main, flags_parser=parse_flags)`: absl's own parsing, except that a problem with the
`--config` file is reported as one line and exit status 2 instead of a traceback: an override
of a config field that does not exist (`--config.optim.learnig_rate=1e-4`, with
ml_collections' suggestion), a config file that is missing or fails to load, an unknown
variant (`configs/tiny.py:bogus`: what its `get_config` raised), a value of the wrong type.

`quiet_startup()` drops the INFO lines JAX writes while probing for accelerators a CPU
machine does not have (libtpu, CUDA plugins) and Orbax's dozen INFO lines per checkpoint, and
keeps a failed checkpoint save to a few lines (`_QuietStartup`, `is_late_loop_callback`).
"""

from __future__ import annotations

import logging as pylogging
import re
import sys
import traceback
import types
from typing import NoReturn, Sequence

from absl import flags, logging

EXIT_BAD_INPUT = 2  # a bad config value, a bad data file: the message names the field or file


def fail(message: str, status: int = EXIT_BAD_INPUT) -> NoReturn:
  """One line on stderr, then exit (no traceback)."""
  sys.stderr.write(f"error: {message}\n")
  sys.stderr.flush()
  sys.exit(status)


def _overrides_naming(key: str, argv: Sequence[str]) -> list[str]:
  return [arg.split("=", 1)[0] for arg in argv[1:]
          if arg.startswith("--config.") and key in arg.split("=", 1)[0].split(".")]


def _config_file_arg(argv: Sequence[str], name: str = "config") -> str:
  for arg in argv[1:]:
    if arg.startswith(f"--{name}="):
      return arg.split("=", 1)[1]
  return ""


def _last_line(text: str) -> str:
  """The last non-empty line of a (possibly multi-line, traceback-bearing) message."""
  lines = [line.strip() for line in str(text).splitlines() if line.strip()]
  return lines[-1] if lines else ""


def _is_config_flag(name: str) -> bool:
  """A flag of `config_flags.DEFINE_config_file` (its parser's type is "config object")."""
  if name not in flags.FLAGS:
    return False
  return flags.FLAGS[name].parser.flag_type() == "config object"


def _config_file_errors(argv: Sequence[str]) -> None:
  """Fails on a config flag whose file could not be loaded (a missing or unreadable file:
  ml_collections keeps the error until the config is first read)."""
  for name in list(flags.FLAGS):
    flag = flags.FLAGS[name]
    if not _is_config_flag(name) or flag.value is None:
      continue
    try:
      flag.value.keys()
    except OSError as e:
      cause = _last_line(e.__cause__ or e)
      fail(f"--{name}={_config_file_arg(argv, name)}: the config file cannot be loaded: {cause}")


def parse_flags(argv: Sequence[str]) -> list[str]:
  try:
    rest = flags.FLAGS(list(argv))
  except flags.Error as e:  # absl wraps a ValueError/TypeError of a flag's parser (get_config raised)
    text = str(e)
    found = re.match(r"flag --([A-Za-z_][\w.]*)=", text)
    if found and _is_config_flag(found.group(1).split(".")[0]):
      cause = re.sub(r"^flag --\S+?=\S*: ", "", _last_line(text))  # the value's own line says which flag
      cause = cause.removeprefix("ValueError: ")  # a config file's own message ("unknown variants ...")
      fail(f"--{found.group(1)}={_config_file_arg(argv, found.group(1))}: {cause}")
    # absl's own report of other flags (app.parse_flags_with_usage)
    sys.stderr.write(f"FATAL Flags parsing error: {text}\nPass --helpshort or --helpfull to see help on flags.\n")
    sys.exit(1)
  except (AttributeError, KeyError) as e:
    text = str(e)
    found = re.search(r"([A-Za-z_][A-Za-z0-9_]*)", text)
    key = found.group(1) if found else text
    hint = re.search(r'Did you mean \W*"([^"\\]+)', text)
    culprits = _overrides_naming(key, argv) or [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
    suggestion = f"; did you mean {hint.group(1)!r}?" if hint else " (check the spelling against the config file)"
    fail(f"{', '.join(culprits) or 'a --config override'}: the config has no field {key!r}{suggestion}")
  except SystemExit:
    raise
  except Exception as e:  # noqa: BLE001 (the config file is user code: any failure is a bad --config)
    cause = e.__cause__ or e
    if isinstance(cause, OSError):  # an override of a config file that could not be loaded
      fail(f"--config={_config_file_arg(argv)}: the config file cannot be loaded: {_last_line(cause)}")
    fail(f"--config={_config_file_arg(argv)}: {type(cause).__name__}: {_last_line(cause)}")
  _config_file_errors(argv)
  return rest


class _QuietStartup(pylogging.Filter):
  """Drops INFO records of backend probing and of Orbax; warnings and errors stay, Orbax's
  as one line each.

  When a checkpoint save fails, Orbax logs the storage error with its traceback from each of
  its threads, and asyncio reports every one of Orbax's gathered write futures as "exception
  was never retrieved" when they are collected. The checkpointer raises that same error with
  the path and the cause (the command's last line), so these are cut to one line or dropped.
  """

  def filter(self, record: pylogging.LogRecord) -> bool:
    if record.name == "asyncio" and "exception was never retrieved" in record.getMessage():
      return False
    if "/orbax/" in record.pathname:
      if record.levelno <= pylogging.INFO:
        return False
      first = (record.getMessage().strip().splitlines() or [""])[0]
      record.msg, record.args, record.exc_info, record.exc_text, record.stack_info = first, (), None, None, None
      return True
    if record.levelno > pylogging.INFO:
      return True
    return not (record.name.startswith("jax") and "Unable to initialize backend" in record.getMessage())


def is_late_loop_callback(error: BaseException | None, tb: types.TracebackType | None = None) -> bool:
  """TensorStore resolving a write on the asyncio loop of an Orbax save that already ended
  (after a failed save, the writes still in flight finish later): asyncio refuses with
  "Event loop is closed", and TensorStore reports it as unraisable, a bare traceback on
  stderr for each write. Nothing is lost: the save's failure is reported by the checkpointer."""
  if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
    return False
  frames = traceback.extract_tb(tb or error.__traceback__)
  return bool(frames) and frames[-1].name == "_check_closed" and frames[-1].filename.endswith("base_events.py")


def _drop_late_loop_callbacks() -> None:
  """Wraps `sys.unraisablehook` (and `sys.excepthook`) to drop `is_late_loop_callback` reports."""
  if getattr(sys.unraisablehook, "steptool_quiet", False):
    return
  previous_unraisable, previous_except = sys.unraisablehook, sys.excepthook

  def unraisablehook(unraisable: object) -> None:
    if not is_late_loop_callback(getattr(unraisable, "exc_value", None), getattr(unraisable, "exc_traceback", None)):
      previous_unraisable(unraisable)

  def excepthook(kind: type[BaseException], error: BaseException, tb: types.TracebackType | None) -> None:
    if not is_late_loop_callback(error, tb):
      previous_except(kind, error, tb)

  unraisablehook.steptool_quiet = True  # type: ignore[attr-defined]
  sys.unraisablehook, sys.excepthook = unraisablehook, excepthook


def quiet_startup() -> None:
  """Installs the filter on absl's handler and on JAX's logger (call before JAX starts a
  backend), and drops TensorStore's late-callback reports (`is_late_loop_callback`)."""
  quiet = _QuietStartup()
  logging.get_absl_handler().addFilter(quiet)
  pylogging.getLogger("jax._src.xla_bridge").addFilter(quiet)
  _drop_late_loop_callbacks()
