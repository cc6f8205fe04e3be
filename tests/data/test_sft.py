"""SFT conversations: the reference file."""

import collections

from steptool_jax.data.sft import read_sft_conversations


def test_reads_the_reference_file(reference_dir):
  conversations = read_sft_conversations(reference_dir / "sft_conversations_G123.json")
  assert len(conversations) == 38
  assert len({c.query_id for c in conversations}) == 10
  first = conversations[0]
  assert first.query_id == "10012" and first.id.startswith("Step 2: I'm looking for some great deals")
  assert [turn.role for turn in first.turns] == ["system", "user", "assistant"]
  assert first.turns[0].content.startswith("You are AutoGPT, you can use many tools(functions)")
  assert first.turns[2].content.endswith("Action: getallcoupon_for_coupons\nAction Input: {}")
  roles = collections.Counter(turn.role for c in conversations for turn in c.turns)
  assert roles == {"system": 38, "user": 43, "assistant": 96, "function": 58}
