"""Rollouts into training data, checked against the data pipeline's own tokenisation of the
environment's step-grained rows, and behaviour log-probs placed by hand."""

import numpy as np
import pytest

from steptool_jax.data.records import StepGrainedRow
from steptool_jax.data.tokenize import tokenize_row
from steptool_jax.envs import episode as env
from steptool_jax.envs import judge
from steptool_jax.envs.expert import Mistakes
from steptool_jax.envs.generate import GenerateConfig, roll_out
from steptool_jax.envs.settings import EnvSettings
from steptool_jax.envs.generate import step_grained_row as env_step_grained_row
from steptool_jax.envs.tasks import generate_tasks
from steptool_jax.rollout import stopping
from steptool_jax.rollout.episodes import Rollout, run_episodes
from steptool_jax.rollout.examples import step_grained_row, tokenized_example
from steptool_jax.rollout.policies import Action, text_policy
from steptool_jax.rollout.scripted import expert_writer
from tests.rollout.tiny_policy import builtin_tokenizer


@pytest.fixture(scope="module")
def expert_data():
  """Expert rollouts (with mistakes, so rewards vary) and the environment's own examples."""
  tasks = list(generate_tasks(100, seed=5)["validation"])[:6]
  tokenizer = builtin_tokenizer()
  writer = expert_writer(mistakes=Mistakes(rate=0.4), seed=0)
  rollouts = run_episodes(tasks, text_policy(writer, tokenizer, eos_id=tokenizer.eos_token_id), tokenizer, bos_id=1,
                          max_context_len=4096)
  reference = roll_out(tasks, GenerateConfig(EnvSettings(mistake_rate=0.4, seed=0), template="toolllama"))
  return rollouts, reference


def test_the_step_grained_row_is_the_environments_row(expert_data):
  rollouts, reference = expert_data
  assert any(len(set(e.judgement.step_rewards)) > 1 for e in reference)  # mistakes made the rewards differ
  for rollout, example in zip(rollouts, reference):
    rewards = judge.judge(rollout.task, rollout.episode.trajectory()).step_rewards
    assert rewards == example.judgement.step_rewards
    assert step_grained_row(rollout, rewards, builtin_tokenizer()) == env_step_grained_row(example, "toolllama")


@pytest.mark.parametrize("max_context_len, max_response_len", [(4096, 512), (300, 12)])
def test_tokenized_example_equals_the_data_pipeline_on_the_same_row(expert_data, max_context_len, max_response_len):
  """The rollout's own tokens (EOS after each action) packed like a TSV row read with
  `eos_after_actions=True`, truncation included."""
  rollouts, reference = expert_data
  tokenizer = builtin_tokenizer()
  for rollout, example in zip(rollouts, reference):
    row = env_step_grained_row(example, "toolllama")
    expected = tokenize_row(row, tokenizer, max_context_len=max_context_len, max_response_len=max_response_len,
                            add_bos=True, eos_after_actions=True)
    got, logp = tokenized_example(rollout, row.rewards, bos_id=1, max_context_len=max_context_len,
                                  max_response_len=max_response_len)
    for field in ("input_ids", "action_mask", "step_ids", "step_rewards"):
      np.testing.assert_array_equal(getattr(got, field), getattr(expected, field), err_msg=field)
    for field in ("num_steps", "context_tokens_dropped", "response_tokens_dropped", "steps_dropped"):
      assert getattr(got, field) == getattr(expected, field), field
    assert logp.shape == got.input_ids.shape and not logp.any()  # scripted: no behaviour log-probs


def _hand_rollout():
  """Prompts [10 11] [12], actions [20 21 22] (log-probs -1 -2 -3) and [23 24] (-4 -5)."""
  task = generate_tasks(20, seed=0)["train"][0]
  episode, _ = env.reset(task)
  actions = (Action("a", (20, 21, 22), (-1.0, -2.0, -3.0), stopping.EOS),
             Action("b", (23, 24), (-4.0, -5.0), stopping.LENGTH))
  return Rollout(task=task, episode=episode, prompts=("p0", "p1"), prompt_ids=((10, 11), (12,)), actions=actions,
                 outcomes=(env.CALLED, env.ANSWERED))


def test_behaviour_logprobs_sit_on_their_tokens():
  example, logp = tokenized_example(_hand_rollout(), [0.5, 1.0], bos_id=1, max_context_len=100, max_response_len=100)
  np.testing.assert_array_equal(example.input_ids, [1, 10, 11, 20, 21, 22, 12, 23, 24])
  np.testing.assert_array_equal(example.step_ids, [-1, -1, -1, 0, 0, 0, -1, 1, 1])
  np.testing.assert_allclose(logp, [0, 0, 0, -1, -2, -3, 0, -4, -5])


def test_behaviour_logprobs_follow_truncation():
  # Context [1 | 10 11 20 21 22 12] cut to 4 tokens -> [1, 21, 22, 12]; last action cut to 1 token.
  example, logp = tokenized_example(_hand_rollout(), [0.5, 1.0], bos_id=1, max_context_len=4, max_response_len=1)
  np.testing.assert_array_equal(example.input_ids, [1, 21, 22, 12, 23])
  np.testing.assert_allclose(logp, [0, -2, -3, 0, -4])
  assert example.context_tokens_dropped == 3 and example.response_tokens_dropped == 1


def test_rewards_must_match_the_steps():
  with pytest.raises(ValueError, match="one per step"):
    tokenized_example(_hand_rollout(), [1.0], bos_id=1, max_context_len=100, max_response_len=100)


def test_row_leaves_eos_out_of_actions():
  rollout = _hand_rollout()
  tokenizer = builtin_tokenizer()
  eos_action = Action("x", tuple(tokenizer.encode("Action: f\n", add_special_tokens=False)) + (2,), None, "eos")
  rollout = Rollout(task=rollout.task, episode=rollout.episode, prompts=("p0",), prompt_ids=((10,),),
                    actions=(eos_action,), outcomes=(env.ANSWERED,))
  assert step_grained_row(rollout, [1.0], tokenizer) == StepGrainedRow(("p0",), ("Action: f\n",), (1.0,))
