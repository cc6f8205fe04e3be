"""Flag parsing shared by the command lines (`train`, `sft`, `evaluate`).

`app.run(main, flags_parser=parse_flags)`: absl's own parsing, except that an override of a
config field that does not exist (`--config.optim.learnig_rate=1e-4`) is reported as one
line naming the flag, exit status 2, instead of the chained traceback ml_collections raises.
"""

from __future__ import annotations

import re
import sys
from typing import Sequence

from absl import app


def _overrides_naming(key: str, argv: Sequence[str]) -> list[str]:
  return [arg.split("=", 1)[0] for arg in argv[1:]
          if arg.startswith("--config.") and key in arg.split("=", 1)[0].split(".")]


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
    sys.stderr.write(f"error: {', '.join(culprits) or 'a --config override'}: the config has no field "
                     f"{key!r}{suggestion}\n")
    sys.exit(2)
