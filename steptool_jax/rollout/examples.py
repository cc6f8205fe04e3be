"""Judged rollouts into training data: step-grained rows (text) and tokenised examples.

The tokenised example is built from the rollout's own tokens (the prompts as tokenised for
the policy, the actions exactly as generated), packed by the data pipeline's
`pack_segments`, so its truncation, `action_mask` and `step_ids` follow the same rules as
a row read from a TSV, and the trained tokens are the sampled ones (re-tokenising the
decoded text could split them differently). The behaviour log-probs from generation are
laid out on the same positions.

The step-grained row renders the same dialogue as text (the original TSV layout) for
inspection or offline reuse; EOS ids are left out of its actions, as the data pipeline
adds them back with `eos_after_actions`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from steptool_jax.data.records import StepGrainedRow
from steptool_jax.data.tokenize import PackedSequence, TokenizedExample, pack_segments
from steptool_jax.rollout.episodes import Rollout


def pack_rollout(rollout: Rollout, *, bos_id: int | None, max_context_len: int,
                 max_response_len: int) -> PackedSequence:
  segments = rollout.segments()
  return pack_segments([ids for ids, _ in segments], [flag for _, flag in segments],
                       max_context_len=max_context_len, max_response_len=max_response_len, bos_id=bos_id)


def behaviour_logprobs(rollout: Rollout, packed: PackedSequence, *, bos_id: int | None) -> np.ndarray:
  """`[L]` float32 log-probs of the generated action tokens on the positions of `packed`
  (0 on prompt tokens and everywhere when the actions were scripted)."""
  pieces = [np.zeros(0 if bos_id is None else 1, np.float32)]
  for prompt, action in zip(rollout.prompt_ids, rollout.actions):
    pieces.append(np.zeros(len(prompt), np.float32))
    logprobs = action.logprobs if action.logprobs is not None else (0.0,) * len(action.token_ids)
    pieces.append(np.asarray(logprobs, np.float32))
  last = len(pieces[-1])
  prefix, context = pieces[0], np.concatenate(pieces[1:-1])
  # The same cuts as pack_segments: the context from the left, the last action from the right.
  full = np.concatenate([prefix, context[packed.context_tokens_dropped:],
                         pieces[-1][:last - packed.response_tokens_dropped]])
  if len(full) != len(packed.input_ids):
    raise AssertionError(f"behaviour log-probs: {len(full)} positions for {len(packed.input_ids)} tokens")
  return full * packed.action_mask


def tokenized_example(rollout: Rollout, step_rewards: Sequence[float], *, bos_id: int | None,
                      max_context_len: int, max_response_len: int) -> tuple[TokenizedExample, np.ndarray]:
  """The rollout as a `TokenizedExample` with the given step rewards, and its behaviour log-probs."""
  if len(step_rewards) != rollout.num_steps:
    raise ValueError(f"step_rewards: expected one per step ({rollout.num_steps}), found {len(step_rewards)}")
  packed = pack_rollout(rollout, bos_id=bos_id, max_context_len=max_context_len, max_response_len=max_response_len)
  example = TokenizedExample(
      input_ids=packed.input_ids, action_mask=packed.action_mask, step_ids=packed.step_ids,
      step_rewards=np.asarray(step_rewards, np.float32), num_steps=rollout.num_steps,
      context_tokens_dropped=packed.context_tokens_dropped,
      response_tokens_dropped=packed.response_tokens_dropped, steps_dropped=packed.steps_dropped)
  return example, behaviour_logprobs(rollout, packed, bos_id=bos_id)


def step_grained_row(rollout: Rollout, step_rewards: Sequence[float], tokenizer: Any) -> StepGrainedRow:
  """The rollout as a row of the original step-grained TSV (prompts, actions, rewards)."""
  eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
  responses = tuple(tokenizer.decode([t for t in action.token_ids if t not in eos], skip_special_tokens=False)
                    for action in rollout.actions)
  return StepGrainedRow(prompts=rollout.prompts, responses=responses, rewards=tuple(float(r) for r in step_rewards))
