"""What the command lines (`train`, `sft`, `evaluate`) share: flag parsing, quiet start-up, errors.

`app.run(main, flags_parser=parse_flags)`: absl's own parsing, except that a problem with the
`--config` file is reported as one line and exit status 2 instead of a traceback: an override
of a config field that does not exist (`--config.optim.learnig_rate=1e-4`, with
ml_collections' suggestion), a config file that is missing or fails to load, an unknown
variant (`configs/tiny.py:bogus`), a value of the wrong type.

`quiet_startup()` drops the INFO lines JAX writes while probing for accelerators a CPU
machine does not have (libtpu, CUDA plugins) and Orbax's dozen INFO lines per checkpoint.
"""

from __future__ import annotations

import logging as pylogging
import re
import sys
from typing import NoReturn, Sequence

from absl import app, logging

EXIT_BAD_INPUT = 2  # a bad config value, a bad data file: the message names the field or file


def fail(message: str, status: int = EXIT_BAD_INPUT) -> NoReturn:
  """One line on stderr, then exit (no traceback)."""
  sys.stderr.write(f"error: {message}\n")
  sys.stderr.flush()
  sys.exit(status)


def _overrides_naming(key: str, argv: Sequence[str]) -> list[str]:
  return [arg.split("=", 1)[0] for arg in argv[1:]
          if arg.startswith("--config.") and key in arg.split("=", 1)[0].split(".")]


def _config_file_arg(argv: Sequence[str]) -> str:
  for arg in argv[1:]:
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
  return ""


def parse_flags(argv: Sequence[str]) -> list[str]:
  try:
    return app.parse_flags_with_usage(list(argv))
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
    fail(f"--config={_config_file_arg(argv)}: {type(cause).__name__}: {cause}")


class _QuietStartup(pylogging.Filter):
  """Drops INFO records of backend probing and of Orbax; warnings and errors stay."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    if record.levelno > pylogging.INFO:
      return True
    if "/orbax/" in record.pathname:
      return False
    return not (record.name.startswith("jax") and "Unable to initialize backend" in record.getMessage())


def quiet_startup() -> None:
  """Installs the filter on absl's handler and on JAX's logger (call before JAX starts a backend)."""
  quiet = _QuietStartup()
  logging.get_absl_handler().addFilter(quiet)
  pylogging.getLogger("jax._src.xla_bridge").addFilter(quiet)
