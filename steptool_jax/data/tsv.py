"""The step-grained TSV of the original project (columns prompt, response, reward).

INTERFACE STUB: implemented by the foundation work; signatures are the contract.
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator

from steptool_jax.data.records import StepGrainedRow


def read_step_grained_tsv(path: str | os.PathLike[str], *, skip_invalid: bool = False) -> list[StepGrainedRow]:
  """Reads every row; raises DataError on the first bad row unless `skip_invalid`."""
  raise NotImplementedError


def write_step_grained_tsv(path: str | os.PathLike[str], rows: Iterable[StepGrainedRow]) -> int:
  """Writes rows in the original format (readable by `read_step_grained_tsv`); returns the count."""
  raise NotImplementedError
