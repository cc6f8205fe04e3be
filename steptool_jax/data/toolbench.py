"""ToolBench converted answers (query id -> query, available_tools, answer tree).

INTERFACE STUB: implemented by the foundation work; signatures are the contract.
"""

from __future__ import annotations

import os
from typing import Iterable

from steptool_jax.data.records import Trajectory


def read_converted_answers(path: str | os.PathLike[str]) -> list[Trajectory]:
  raise NotImplementedError


def write_converted_answers(path: str | os.PathLike[str], trajectories: Iterable[Trajectory]) -> int:
  """Writes the same JSON layout the reader accepts (round trip)."""
  raise NotImplementedError
