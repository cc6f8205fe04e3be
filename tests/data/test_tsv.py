"""The step-grained TSV reader and writer, on the published file and on generated rows."""

import csv
import fractions

import hypothesis
from hypothesis import strategies as st
import pytest

from steptool_jax.data.records import StepGrainedRow
from steptool_jax.data.tsv import read_step_grained_tsv, write_step_grained_tsv

TSV = "toolllama_step_grained_for_ppo.tsv"


def test_reads_the_published_file(reference_dir):
  rows = read_step_grained_tsv(reference_dir / TSV)
  assert [row.num_steps for row in rows] == [2, 4, 4, 4, 4, 4, 4, 4, 4, 2]
  first = rows[0]
  assert first.rewards == (1.0, 0.0)
  assert first.prompts[0].startswith("System:\nSpecifically, you have access to the following APIs: [")
  assert first.prompts[0].endswith("Begin!\n\nAssistant:\n")
  assert first.prompts[1].startswith('Function:\n{"error": "", "response": ')
  assert first.responses[0] == ('Action: image_search_for_bing_image_search\nAction Input: {\n'
                                '  "q": "educational images",\n  "count": 5\n}\n')
  assert rows[4].rewards == pytest.approx((5 / 30, 20 / 30, 1.0, 1.0))


def test_published_rewards_are_three_judge_averages(reference_dir):
  # Intermediate rewards are multiples of 1/30, final ones multiples of 1/6 (three runs).
  for row in read_step_grained_tsv(reference_dir / TSV):
    for reward in row.rewards[:-1]:
      assert fractions.Fraction(reward).limit_denominator(1000).denominator in (1, 2, 3, 5, 6, 10, 15, 30)
    assert (row.rewards[-1] * 6) == pytest.approx(round(row.rewards[-1] * 6))


def test_writer_reproduces_the_published_file_byte_for_byte(reference_dir, tmp_path):
  rows = read_step_grained_tsv(reference_dir / TSV)
  out = tmp_path / "out.tsv"
  assert write_step_grained_tsv(out, rows) == len(rows)
  assert out.read_bytes() == (reference_dir / TSV).read_bytes()


# Text with everything that could break the quoting: tabs, newlines, both quotes, backslashes.
_TEXT = st.text(alphabet=st.sampled_from(list("ab \t\n\r'\"\\{}[],é€😀")), max_size=12)


@st.composite
def _rows(draw):
  steps = draw(st.integers(1, 4))
  prompts = draw(st.lists(_TEXT, min_size=steps, max_size=steps))
  responses = draw(st.lists(_TEXT.filter(lambda s: s.strip()), min_size=steps, max_size=steps))
  rewards = draw(st.lists(st.floats(-10, 10, allow_nan=False), min_size=steps, max_size=steps))
  return StepGrainedRow(tuple(prompts), tuple(responses), tuple(rewards))


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(st.lists(_rows(), min_size=1, max_size=4))
def test_round_trip_of_awkward_text(tmp_path_factory, rows):
  path = tmp_path_factory.mktemp("tsv") / "rows.tsv"
  write_step_grained_tsv(path, rows)
  assert read_step_grained_tsv(path) == rows


def test_written_file_is_plain_csv_with_tab_delimiter(tmp_path):
  path = tmp_path / "one.tsv"
  write_step_grained_tsv(path, [StepGrainedRow(("p\t0",), ("a",), (0.5,))])
  with open(path, newline="", encoding="utf-8") as f:
    cells = list(csv.reader(f, delimiter="\t"))
  assert cells == [["prompt", "response", "reward"], ["['p\\t0']", "['a']", "[0.5]"]]


@pytest.mark.parametrize("row, message", [
    (StepGrainedRow(("p",), ("a", "b"), (1.0, 1.0)), "equal length"),
    (StepGrainedRow((), (), ()), "non-empty list"),
    (StepGrainedRow(("p",), ("  ",), (1.0,)), "non-empty action"),
    (StepGrainedRow(("p",), ("a",), (float("nan"),)), "finite"),
])
def test_writer_refuses_rows_the_reader_would_reject(tmp_path, row, message):
  with pytest.raises(ValueError, match=message):
    write_step_grained_tsv(tmp_path / "bad.tsv", [row])


def test_columns_may_come_in_any_order(tmp_path):
  path = tmp_path / "reordered.tsv"
  path.write_text("reward\tprompt\tresponse\n[0.5]\t['p']\t['a']\n", encoding="utf-8")
  assert read_step_grained_tsv(path) == [StepGrainedRow(("p",), ("a",), (0.5,))]


def test_header_only_file_has_no_rows(tmp_path):
  path = tmp_path / "none.tsv"
  assert write_step_grained_tsv(path, []) == 0
  assert path.read_text(encoding="utf-8") == "prompt\tresponse\treward\n"
  assert read_step_grained_tsv(path) == []
