"""The rule annotator on hand-worked cases."""

import json

import pytest

from steptool_jax.data.records import AnswerStatus, ToolCall, Trajectory
from steptool_jax.rewards.rules import annotate_by_rules, contribution, succ_calling


def envelope(response, error=""):
  return json.dumps({"error": error, "response": response})


@pytest.mark.parametrize("response, expected", [
    (envelope({"temp_c": 21}), 1),
    (envelope([{"name": "Ennio"}]), 1),
    (envelope("The forecast is sunny."), 1),
    (envelope([]), 1),
    (envelope("ok", error="Timeout error"), 0),
    (envelope({"status": 400, "message": "bad"}), 0),
    (envelope({"status": "400"}), 0),
    (envelope({"status": 200, "data": 1}), 1),
    (envelope("Something went wrong"), 0),
    (envelope("Internal Error occurred"), 0),
    (envelope("The result is empty"), 0),
    (envelope("Please provide a valid API key"), 0),
    (envelope("You can Please yourself"), 1),  # 'Please' only counts at the start
    (envelope('{"status": 400, "detail": "x"}'), 0),  # double-encoded object
    (envelope(""), 0),
    (envelope(None), 0),
    ("plain text from a tool", 1),
    ("plain text with an error", 0),
    # A stored observation cut short with '...' (invalid JSON): read from its prefix.
    ('{"error": "", "response": [{"name": "Ennio", "url": "https://x/err...', 1),
    ('{"error": "", "response": {"status": 400, "msg": "no...', 0),
    ('{"error": "quota exceeded", "response": "...', 0),
    ('{"error": "", "response": "Please subscri...', 0),
])
def test_succ_calling(response, expected):
  assert succ_calling(response) == expected


def test_contribution_threshold_by_hand():
  response = envelope("a1 b2 c3 d4 e5 f6 g7 h8 i9 j10")  # 10 words
  assert contribution(response, "We found c3 then e5 and j10.") == 1  # 3/10 = 0.3
  assert contribution(response, "We found c3 then e5.") == 0  # 2/10
  assert contribution(response, "We found c3 then e5.", threshold=0.2) == 1
  assert contribution(response, "j10 e5 c3") == 0  # order matters: LCS is 1
  with pytest.raises(ValueError, match="threshold"):
    contribution(response, "x", threshold=1.5)


def test_contribution_reads_unicode_escapes_in_truncated_responses():
  # Undecoded, the words would be 'citt', 'u00e0', ... and nothing would match.
  response = '{"error": "", "response": "citt\\u00e0 piet\\u00e0 libert\\u00e0 ...'
  assert contribution(response, "Città, pietà, libertà.") == 1


def _trajectory(finish_args):
  calls = (ToolCall("w", "{}", envelope("Paris is sunny at 21 C")),
           ToolCall("w", "{}", envelope("Please pass a city")),
           ToolCall("w", "{}", envelope("Rome is rainy and cold today, with strong winds from the north")))
  finish = None if finish_args is None else ToolCall("Finish", json.dumps(finish_args))
  return Trajectory("q", "weather?", (), calls, finish)


def test_annotate_by_rules_by_hand():
  trajectory = _trajectory({"return_type": "give_answer", "final_answer": "Paris is sunny at 21 C."})
  # Call 1: SC 1, Con 1 (all 6 words) -> 1. Call 2: SC 0 ('Please...'), Con 0 (no shared word) -> 0.
  # Call 3: SC 1, Con 0 (only 'is': 1 of 12 words) -> 0.5. Final: Unsure 0.5.
  assert annotate_by_rules(trajectory, AnswerStatus.UNSURE) == pytest.approx((1.0, 0.0, 0.5, 0.5))
  # alpha = 3: (3*SC + Con)/4.
  assert annotate_by_rules(trajectory, AnswerStatus.SOLVED, alpha=3.0) == pytest.approx((1.0, 0.0, 0.75, 1.0))
  assert annotate_by_rules(trajectory, 5 / 6)[-1] == pytest.approx(5 / 6)
  with pytest.raises(ValueError, match="is_solved"):
    annotate_by_rules(trajectory, 2.0)


def test_no_finish_means_no_final_step_and_no_contribution():
  assert annotate_by_rules(_trajectory(None), AnswerStatus.SOLVED) == pytest.approx((0.5, 0.0, 0.5))
