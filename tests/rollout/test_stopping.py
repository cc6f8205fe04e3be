"""Where generated actions end: stops per template, the cut, and the text the environment reads."""

import pytest

from steptool_jax.envs.builtin_tokenizer import load_tokenizer
from steptool_jax.rollout import stopping
from steptool_jax.rollout.stopping import ActionStops, action_stops, cut_at_turn_header, split_action
from tests.tiny_tokenizer import tiny_tokenizer


def test_builtin_toolllama_stops_are_eos_and_the_four_role_markers():
  tokenizer = load_tokenizer()
  stops = action_stops(tokenizer, "toolllama")
  # ids from docs/envs.md: </s> 2; System 3, User 4, Assistant 5, Function 6. ToolLLaMA's
  # end-of-action newline is no stop (it also ends the lines inside an action).
  assert stops.ends == ((2,),)
  assert sorted(stops.turns) == [(3,), (4,), (5,), (6,)]
  assert stops.stop_ids == (2, 3, 4, 5, 6) and stops.stop_sequences == ()


def test_chatml_end_marker_stays_and_the_next_header_is_a_turn():
  tokenizer = tiny_tokenizer()  # spells <|im_end|> and <|im_start|> as several tokens
  stops = action_stops(tokenizer, "qwen2")
  im_end = tuple(tokenizer.encode("<|im_end|>", add_special_tokens=False))
  im_start = tuple(tokenizer.encode("<|im_start|>", add_special_tokens=False))
  assert stops.ends == ((tokenizer.eos_token_id,), im_end)
  assert stops.turns == (im_start,)
  assert set(stops.stop_sequences) == {im_end, im_start} and stops.stop_ids == (tokenizer.eos_token_id,)


STOPS = ActionStops(ends=((2,), (7, 8)), turns=((6,), (9, 9)))


@pytest.mark.parametrize("tokens, stopped, expected", [
    ([11, 12, 2], True, (3, 1, stopping.EOS)),  # EOS kept, and marked as the end
    ([11, 7, 8], True, (3, 2, stopping.EOS)),  # a two-token end marker
    ([11, 12, 6], True, (2, 0, stopping.TURN)),  # a next-turn header is cut off
    ([11, 9, 9], True, (1, 0, stopping.TURN)),
    ([6], True, (1, 1, stopping.TURN)),  # nothing but a header: kept as the action's one token
    ([11, 12, 13], False, (3, 0, stopping.LENGTH)),  # ran out of tokens
    ([11, 12, 2], False, (3, 0, stopping.LENGTH)),  # a 2 at the limit without a stop flag is no EOS
])
def test_split_action(tokens, stopped, expected):
  cut = split_action(tokens, stopped, STOPS)
  assert (cut.length, cut.end_length, cut.stop) == expected


def test_empty_stop_sequences_are_rejected():
  with pytest.raises(ValueError, match="non-empty"):
    ActionStops(ends=((),), turns=())


def test_cut_at_turn_header_only_at_a_line_start():
  action = 'Action: f\nAction Input: {"a": 1}\n'
  assert cut_at_turn_header(action + "Function:\n{...}\nAssistant:\n", "toolllama") == action
  assert cut_at_turn_header("Thought: no Function: here\n", "toolllama") == "Thought: no Function: here\n"
  assert cut_at_turn_header("x<|im_end|>\n<|im_start|>user\nhi", "qwen2") == "x<|im_end|>\n"


def test_smollm2_actions_stop_at_im_end_and_a_new_turn_is_cut(smollm2_tokenizer):
  # SmolLM2's ChatML markers are single special tokens: <|im_start|> 1, <|im_end|> 2 (also its EOS).
  stops = action_stops(smollm2_tokenizer, "qwen2")
  assert stops.ends == ((2,),) and stops.turns == ((1,),)
  assert stops.stop_ids == (1, 2) and stops.stop_sequences == ()
  action = smollm2_tokenizer.encode('Action: get_forecast\nAction Input: {"city": "Oslo"}<|im_end|>')
  assert split_action(action, True, stops) == stopping.ActionCut(len(action), 1, stopping.EOS)
  header = smollm2_tokenizer.encode('Action: Finish\n<|im_start|>')
  assert split_action(header, True, stops) == stopping.ActionCut(len(header) - 1, 0, stopping.TURN)
