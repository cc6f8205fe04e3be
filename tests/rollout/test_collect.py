"""Online rollouts with a generating policy: batch shapes and masks after collate, groups,
behaviour log-probs equal to the trainer's recomputation, padding of batch and width."""

import numpy as np
import pytest

from steptool_jax.data.batching import collate_step_grained
from steptool_jax.envs.settings import EnvSettings
from steptool_jax.envs.tasks import generate_tasks
from steptool_jax.models.generate import SamplingConfig
from steptool_jax.rollout import stopping
from steptool_jax.rollout.collect import RolloutSettings, collect, grouped
from steptool_jax.rollout.policies import _left_pad, batch_buckets, model_policy, width_buckets
from steptool_jax.rollout.stopping import action_stops
from tests.rollout.tiny_policy import MAX_BATCH, MAX_CONTEXT_LEN, MAX_NEW_TOKENS, builtin_tokenizer, tiny_policy

import jax

MAX_STEPS = 2
MAX_SLOTS = 4


@pytest.fixture(scope="module")
def collected():
  tokenizer = builtin_tokenizer()
  tasks = list(generate_tasks(40, seed=2)["validation"])[:2]
  policy = model_policy(tiny_policy(), tokenizer, action_stops(tokenizer, "toolllama"),
                        SamplingConfig(max_new_tokens=MAX_NEW_TOKENS, temperature=1.0), jax.random.key(0),
                        template="toolllama", max_batch=MAX_BATCH, widths=(MAX_CONTEXT_LEN,))
  settings = RolloutSettings(bos_id=1, max_context_len=MAX_CONTEXT_LEN, max_response_len=MAX_NEW_TOKENS,
                             environment=EnvSettings(max_steps=MAX_STEPS), template="toolllama", group_size=2)
  return collect(tasks, policy, tokenizer, settings)


def test_groups_repeat_each_task(collected):
  assert [r.group for r in collected.rollouts] == [0, 0, 1, 1]
  assert [e["group_id"] for e in collected.examples] == [0, 0, 1, 1]
  assert collected.rollouts[0].task is collected.rollouts[1].task
  assert grouped(["a", "b"], 3) == (["a", "a", "a", "b", "b", "b"], [0, 0, 0, 1, 1, 1])
  with pytest.raises(ValueError, match="group_size"):
    RolloutSettings(bos_id=1, max_context_len=8, max_response_len=8, environment=EnvSettings(), template="toolllama",
                    group_size=0)


def test_random_model_output_becomes_failed_steps(collected):
  for rollout, verdict in zip(collected.rollouts, collected.judgements):
    assert 1 <= rollout.num_steps <= MAX_STEPS and len(verdict.step_rewards) == rollout.num_steps
    assert verdict.status.value == "Unsolved"
    for action in rollout.actions:
      assert 1 <= len(action.token_ids) <= MAX_NEW_TOKENS and len(action.logprobs) == len(action.token_ids)
      assert action.stop in (stopping.EOS, stopping.TURN, stopping.LENGTH)
  stats = collected.stats()
  assert stats["rollout/episodes"] == 4 and stats["rollout/solved_rate"] == 0.0


def test_unfinished_episodes_end_on_the_unfinished_reward(collected):
  """A random model never calls Finish within two steps: every example's last step reward
  is the unfinished reward (0 by default), the other steps keep their call rewards."""
  penalised = RolloutSettings(bos_id=1, max_context_len=MAX_CONTEXT_LEN, max_response_len=MAX_NEW_TOKENS,
                              environment=EnvSettings(max_steps=MAX_STEPS, unfinished_reward=-1.0),
                              template="toolllama")
  for rollout, verdict, example in zip(collected.rollouts, collected.judgements, collected.examples):
    assert rollout.episode.finish is None
    rewards = penalised.judgement(rollout).step_rewards
    assert rewards[-1] == -1.0 and rewards[:-1] == verdict.step_rewards[:-1]
    assert example["step_rewards"][rollout.num_steps - 1] == 0.0 == verdict.step_rewards[-1]


def test_collated_batch_shapes_and_masks(collected):
  batch = collate_step_grained(collected.examples, pad_id=0, length_buckets=(512, 1024), max_steps=MAX_SLOTS,
                               batch_size=6)
  width = batch["input_ids"].shape[1]
  assert width in (512, 1024)
  for key in ("input_ids", "attention_mask", "action_mask", "step_ids"):
    assert batch[key].shape == (6, width) and batch[key].dtype == np.int32
  assert batch["step_rewards"].shape == (6, MAX_SLOTS) and batch["num_steps"].shape == (6,)
  np.testing.assert_array_equal(batch["action_mask"], (batch["step_ids"] >= 0).astype(np.int32))
  assert not batch["attention_mask"][4:].any() and not batch["action_mask"][4:].any()  # filler rows
  for i, (rollout, verdict) in enumerate(zip(collected.rollouts, collected.judgements)):
    length = 1 + sum(len(p) for p in rollout.prompt_ids) + sum(len(a.token_ids) for a in rollout.actions)
    assert batch["attention_mask"][i].sum() == length and batch["input_ids"][i, 0] == 1
    assert batch["num_steps"][i] == rollout.num_steps
    np.testing.assert_allclose(batch["step_rewards"][i, :rollout.num_steps], verdict.step_rewards)
    for step, action in enumerate(rollout.actions):  # each step's tokens are the generated ones
      np.testing.assert_array_equal(batch["input_ids"][i][batch["step_ids"][i] == step], action.token_ids)


def test_behaviour_logprobs_equal_the_trainers_recomputation(collected):
  """Generation (left-padded, KV cache) and scoring (right-padded, one forward) agree on
  every action token: the behaviour log-probs are the policy's `log pi(token | context)`."""
  batch = collate_step_grained(collected.examples, pad_id=0, length_buckets=(1024,), max_steps=MAX_SLOTS)
  recomputed = np.asarray(tiny_policy().token_logprobs(batch["input_ids"], batch["attention_mask"]))
  for i, example in enumerate(collected.examples):
    n = len(example["input_ids"])
    mask = example["action_mask"].astype(bool)
    np.testing.assert_allclose(example["behaviour_logp"][mask], recomputed[i, :n][mask], atol=2e-4)
    assert not example["behaviour_logp"][~mask].any()


def test_batches_and_widths_are_padded_to_buckets():
  assert batch_buckets(6) == (1, 2, 4, 6) and batch_buckets(1) == (1,)
  assert width_buckets(300, 128) == (128, 256, 300)
  ids, mask = _left_pad([[5, 6], [7]], width=4, num_rows=4, pad_id=0)
  np.testing.assert_array_equal(ids, [[0, 0, 5, 6], [0, 0, 0, 7], [0, 0, 5, 6], [0, 0, 5, 6]])
  np.testing.assert_array_equal(mask, [[0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 1, 1], [0, 0, 1, 1]])
