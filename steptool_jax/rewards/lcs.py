"""Longest common subsequence, bit-parallel, for the rule-based Contribution score.

The textbook dynamic programme fills an n x m table one cell at a time; in Python that is
far too slow for tool responses of thousands of words. The bit-parallel form (Allison and
Dix 1986; Crochemore et al. 2001; Hyyrö 2004) keeps one column of the table as the bits of
a single integer and advances it with a handful of integer operations per symbol of the
other sequence, so the work is O(n * m / w) machine words, done inside CPython's big-int
arithmetic instead of the interpreter loop.

Unit: words. The rule asks how much of a tool response made it into the final answer;
over characters, any two English texts share a long subsequence by chance (common letters
and spaces line up), so character coverage is high even for unrelated texts and a 0.3
threshold would say little. Lower-cased `\\w+` words keep chance matches rare while still
crediting answers that quote values, names and numbers from the response.
"""

from __future__ import annotations

import re
from typing import Hashable, Sequence

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
  """Lower-cased word tokens (letters, digits, underscore; any script)."""
  return _WORD.findall(text.lower())


def lcs_length(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
  """Length of the longest common subsequence of two sequences of hashable symbols."""
  if len(a) < len(b):
    a, b = b, a  # one bit per symbol of the longer sequence, one loop turn per symbol of the shorter
  if not b:
    return 0
  match_masks: dict[Hashable, int] = {}
  for i, symbol in enumerate(a):
    match_masks[symbol] = match_masks.get(symbol, 0) | (1 << i)
  full = (1 << len(a)) - 1
  # Zero bits of `column` mark the rows where the LCS length steps up; carries out of the
  # top bit never flow back down, so masking once at the end is enough.
  column = full
  for symbol in b:
    matched = column & match_masks.get(symbol, 0)
    column = (column + matched) | (column - matched)
  return len(a) - (column & full).bit_count()


def lcs_coverage(text: str, reference: str) -> float:
  """Fraction of the words of `text` that the LCS with `reference` covers (0 for empty text)."""
  text_words = words(text)
  if not text_words:
    return 0.0
  return lcs_length(text_words, words(reference)) / len(text_words)
