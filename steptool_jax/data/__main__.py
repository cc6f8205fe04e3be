"""`python -m steptool_jax.data stats PATH [--format=F] [--skip-invalid]`.

Validates a data file and prints one JSON object with its statistics. Bad input exits
with status 2 and `PATH:ROW: field: what was expected, what was found` on stderr; with
`--skip-invalid` every bad record is reported on stderr and counted instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from steptool_jax.data.errors import DataError
from steptool_jax.data.formats import FORMATS
from steptool_jax.data.stats import file_stats

EXIT_BAD_INPUT = 2


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m steptool_jax.data", description=__doc__.split("\n\n")[1])
  commands = parser.add_subparsers(dest="command", required=True)
  stats = commands.add_parser("stats", help="validate a file and print its statistics as JSON")
  stats.add_argument("path")
  stats.add_argument("--format", choices=FORMATS, help="the file format (detected when omitted)")
  stats.add_argument("--skip-invalid", action="store_true", help="report and count bad records instead of stopping")
  args = parser.parse_args(argv)

  errors: list[DataError] = []
  try:
    result = file_stats(args.path, args.format, skip_invalid=args.skip_invalid, errors=errors)
  except DataError as e:
    print(e.format(), file=sys.stderr)
    return EXIT_BAD_INPUT
  for error in errors:
    print(error.format(), file=sys.stderr)
  print(json.dumps(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
