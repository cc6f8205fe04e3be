"""Bit-parallel LCS against the textbook dynamic programme."""

import hypothesis
from hypothesis import strategies as st

from steptool_jax.rewards.lcs import lcs_coverage, lcs_length, words


def naive_lcs(a, b):
  table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
  for i in range(1, len(a) + 1):
    for j in range(1, len(b) + 1):
      if a[i - 1] == b[j - 1]:
        table[i][j] = table[i - 1][j - 1] + 1
      else:
        table[i][j] = max(table[i - 1][j], table[i][j - 1])
  return table[-1][-1]


def test_known_examples():
  assert lcs_length("ABCBDAB", "BDCABA") == 4  # BCBA (CLRS 15.4)
  assert lcs_length("AGGTAB", "GXTXAYB") == 4  # GTAB
  assert lcs_length("", "abc") == lcs_length("abc", "") == 0
  assert lcs_length("abc", "abc") == 3 and lcs_length("abc", "def") == 0


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(st.lists(st.integers(0, 4), max_size=90), st.lists(st.integers(0, 4), max_size=90))
def test_matches_the_dynamic_programme(a, b):
  # Lengths around 64 and 128 exercise the multi-word big-int carries.
  assert lcs_length(a, b) == naive_lcs(a, b)
  assert lcs_length(b, a) == naive_lcs(a, b)


def test_long_sequences():
  a = [i % 7 for i in range(300)]
  b = [i % 5 for i in range(250)]
  assert lcs_length(a, b) == naive_lcs(a, b)


def test_words_and_coverage():
  assert words("The 5-day Forecast: rain, café!") == ["the", "5", "day", "forecast", "rain", "café"]
  # 4 of the 5 response words appear in order in the answer.
  assert lcs_coverage("sunny 21 C in Paris", "In Paris it is sunny with 21 C, clear") == 0.6
  assert lcs_coverage("sunny 21 C in Paris", "sunny, 21 C, in Paris") == 1.0
  assert lcs_coverage("", "anything") == 0.0
