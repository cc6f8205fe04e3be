"""The ReAct parser: hand-written cases, and it never raises on any text."""

from hypothesis import given, settings, strategies as st

from steptool_jax.envs.react import format_action, parse_action


def test_full_action_with_multiline_json_and_trailing_text():
  parsed = parse_action('Thought: first the weather.\nAction: get_daily_forecast_for_weather\n'
                        'Action Input: {\n  "city": "Paris",\n  "day": "Monday"\n}\nObservation: made up')
  assert parsed.ok
  assert parsed.thought == "first the weather."
  assert parsed.name == "get_daily_forecast_for_weather"
  assert parsed.arguments == {"city": "Paris", "day": "Monday"}
  assert parsed.arguments_text == '{\n  "city": "Paris",\n  "day": "Monday"\n}'


def test_reference_tsv_form_without_thought():
  parsed = parse_action('Action: Finish\nAction Input: {\n  "return_type": "give_answer",\n'
                        '  "final_answer": "done"\n}\n')
  assert parsed.ok and parsed.thought == "" and parsed.name == "Finish"
  assert parsed.arguments == {"return_type": "give_answer", "final_answer": "done"}


def test_thought_without_label_is_the_text_before_the_action():
  assert parse_action("I will look.\nAction: f\nAction Input: {}").thought == "I will look."


def test_malformed_actions():
  cases = {
      "just some words": "expected a line 'Action:",
      "Action:\nAction Input: {}": "names no function",
      "Action: f": "expected a line 'Action Input:",
      "Action: f\nAction Input:   ": "is empty",
      "Action: f\nAction Input: {'city': 'Paris'}": "not valid JSON",
      "Action: f\nAction Input: {\"city\": \"Paris\"": "not valid JSON",
      "Action: f\nAction Input: [1, 2]": "must be a JSON object",
      "Action: f\nAction Input: \"text\"": "must be a JSON object",
      "Action: f\nAction Input: {\"a\": \"" + "x" * 2000 + "\"}": "longer than 1024",
      "Action: f\nAction Input: " + "[" * 3000: "longer than 1024",
      "x" * 5000: "longer than 4096",
  }
  for text, message in cases.items():
    parsed = parse_action(text)
    assert not parsed.ok and message in parsed.error, (text[:40], parsed.error)
    assert parsed.arguments is None


def test_deep_nesting_within_the_size_limit_is_an_error_not_a_crash():
  parsed = parse_action("Action: f\nAction Input: " + "[" * 1000, max_argument_chars=5000)
  assert not parsed.ok


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)
       .filter(lambda s: "\n" not in s and s.strip() == s),
       st.dictionaries(st.text(max_size=10), st.text(max_size=10) | st.integers() | st.floats(allow_nan=False),
                       max_size=4),
       st.text(max_size=40).filter(lambda s: "\n" not in s and s.strip() == s))
def test_format_then_parse_round_trips(name, args, thought):
  import json
  text = format_action(name, json.dumps(args, ensure_ascii=False), thought)
  parsed = parse_action(text)
  assert parsed.ok, parsed.error
  assert (parsed.name, parsed.arguments, parsed.thought) == (name, args, thought)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300) | st.lists(st.sampled_from(
    ["Thought:", "Action:", "Action Input:", " {", "}", "\"a\"", ":", "1", "\n", "[", "]", "Finish", "x"]),
    max_size=30).map("".join))
def test_never_raises(text):
  parsed = parse_action(text)
  assert parsed.ok == (parsed.error == "")
  assert parsed.ok == isinstance(parsed.arguments, dict)
