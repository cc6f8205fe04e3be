"""Rule-based step annotation (no LLM): SuccCalling, Contribution, IsSolved.

INTERFACE STUB: implemented by the foundation work; signatures are the contract.
"""

from __future__ import annotations

from steptool_jax.data.records import AnswerStatus, Trajectory


def succ_calling(response: str) -> int:
  """1 when the tool call succeeded judging by its ToolBench envelope, else 0."""
  raise NotImplementedError


def contribution(response: str, final_answer: str, *, threshold: float = 0.3) -> int:
  """1 when the LCS of response and final answer covers >= threshold of the response."""
  raise NotImplementedError


def annotate_by_rules(trajectory: Trajectory, is_solved: AnswerStatus, *, alpha: float = 1.0,
                      threshold: float = 0.3) -> tuple[float, ...]:
  """Step rewards (intermediate ones, then the final IsSolved one) for one trajectory."""
  raise NotImplementedError
