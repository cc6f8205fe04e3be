"""Lock-step batched episodes with scripted policies: texts, tokens, drop-out, any output."""

import random

import pytest
from hypothesis import given, settings, strategies as st

from steptool_jax.data import render
from steptool_jax.data.records import AnswerStatus
from steptool_jax.envs import episode as env
from steptool_jax.envs import expert, judge
from steptool_jax.envs.tasks import generate_tasks
from steptool_jax.rollout import stopping
from steptool_jax.rollout.episodes import run_episodes
from steptool_jax.rollout.policies import text_policy
from steptool_jax.rollout.scripted import GIVE_UP_ACTION, expert_writer, give_up_writer
from tests.rollout.tiny_policy import builtin_tokenizer

EOS = 2


@pytest.fixture(scope="module")
def tasks():
  # One task of each seen template with 1, 2 and 3 calls, so episodes end in different rounds.
  pool = generate_tasks(200, seed=3)["train"]
  wanted = ("city_population", "high_in_fahrenheit", "population_difference", "exchange_rate")
  return [next(t for t in pool if t.template == name) for name in wanted]


def counting(policy):
  """The policy, and the list of batch sizes it was asked for."""
  sizes = []

  def act(requests):
    sizes.append(len(requests))
    return policy(requests)
  return act, sizes


def test_expert_episodes_are_the_rendered_expert_dialogues(tasks):
  tokenizer = builtin_tokenizer()
  policy, sizes = counting(text_policy(expert_writer(), tokenizer, eos_id=EOS))
  rollouts = run_episodes(tasks, policy, tokenizer, bos_id=1, max_context_len=4096)
  # Calls + Finish per template: 2, 3, 4, 2 steps. Finished episodes drop out of the batch.
  assert [r.num_steps for r in rollouts] == [2, 3, 4, 2]
  assert sizes == [4, 4, 2, 1]
  for task, rollout in zip(tasks, rollouts):
    reference = expert.run_expert(task).episode
    assert rollout.task is task and rollout.episode.actions == reference.actions
    assert judge.answer_status(task, rollout.episode.trajectory()) is AnswerStatus.SOLVED
    prompts, responses = render.render_steps(reference.trajectory(), "toolllama", system_prompt=env.system_prompt(task))
    assert rollout.prompts == prompts
    assert [a.text for a in rollout.actions] == list(responses)
    assert rollout.prompt_ids == tuple(tuple(tokenizer.encode(p, add_special_tokens=False)) for p in prompts)
    for action, response in zip(rollout.actions, responses):
      assert action.token_ids == tuple(tokenizer.encode(response, add_special_tokens=False)) + (EOS,)
      assert action.logprobs is None and action.stop == stopping.SCRIPTED
    assert rollout.outcomes[-1] == env.ANSWERED and set(rollout.outcomes[:-1]) == {env.CALLED}


def test_on_round_reports_each_round_and_the_episodes_finished_by_then(tasks):
  tokenizer = builtin_tokenizer()
  reports = []
  run_episodes(tasks, text_policy(expert_writer(), tokenizer, eos_id=EOS), tokenizer, bos_id=1,
               max_context_len=4096, on_round=lambda *report: reports.append(report))
  # Episodes of 2, 3, 4 and 2 steps: none ends in round 1, two in round 2, one each after.
  assert reports == [(1, 0), (2, 2), (3, 3), (4, 4)]


def test_the_context_grows_by_exactly_the_previous_action_and_prompt(tasks):
  tokenizer = builtin_tokenizer()
  seen = []

  def spy(requests):
    seen.extend((r.episode.num_steps, r.context_ids) for r in requests if r.episode.task is tasks[2])
    return text_policy(expert_writer(), tokenizer, eos_id=EOS)(requests)

  rollout = run_episodes(tasks, spy, tokenizer, bos_id=1, max_context_len=4096)[2]
  expected = [1]
  for step, context in seen:
    expected += list(rollout.prompt_ids[step])
    assert list(context) == expected
    expected += list(rollout.actions[step].token_ids)


def test_give_up_and_garbage_policies_get_defined_outcomes(tasks):
  tokenizer = builtin_tokenizer()
  config = env.EnvConfig(max_steps=3)
  gave_up = run_episodes(tasks, text_policy(give_up_writer(), tokenizer), tokenizer, bos_id=1,
                         max_context_len=4096, env_config=config)
  assert all(r.outcomes == (env.GAVE_UP,) and r.actions[0].text == GIVE_UP_ACTION for r in gave_up)
  garbage = run_episodes(tasks, text_policy(lambda e: "blah }{ Action Input: [", tokenizer), tokenizer,
                         bos_id=1, max_context_len=4096, env_config=config)
  for r in garbage:
    assert r.outcomes == (env.INVALID_ACTION, env.INVALID_ACTION, env.STEP_LIMIT)
    assert r.episode.done and r.episode.trajectory().finish is None


def test_groups_default_to_the_task_index_and_are_checked(tasks):
  tokenizer = builtin_tokenizer()
  policy = text_policy(give_up_writer(), tokenizer)
  assert [r.group for r in run_episodes(tasks, policy, tokenizer, bos_id=1, max_context_len=4096)] == [0, 1, 2, 3]
  rollouts = run_episodes(tasks[:2], policy, tokenizer, bos_id=1, max_context_len=4096, groups=[7, 7])
  assert [r.group for r in rollouts] == [7, 7]
  with pytest.raises(ValueError, match="groups"):
    run_episodes(tasks, policy, tokenizer, bos_id=1, max_context_len=4096, groups=[0])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(max_size=300), min_size=1, max_size=6), st.integers(0, 2**16))
def test_any_text_is_an_action(tasks, texts, seed):
  """Whatever is written (unicode junk, half-actions, special-token text), episodes end
  within max_steps with one outcome per action and never raise."""
  tokenizer = builtin_tokenizer()
  rng = random.Random(seed)
  pieces = texts + ['Action: Finish\nAction Input: {"return_type": "give_answer"', "</s>", "Function:\n",
                    'Action: get_city_facts_for_city_info\nAction Input: {"city": "Oslo"}\n']
  write = lambda episode: "".join(rng.choice(pieces) for _ in range(rng.randint(0, 3)))
  config = env.EnvConfig(max_steps=4)
  rollouts = run_episodes(tasks[:2], text_policy(write, tokenizer), tokenizer, bos_id=1, max_context_len=256,
                          env_config=config)
  for r in rollouts:
    assert 1 <= r.num_steps <= 4 and len(r.outcomes) == r.num_steps == r.episode.num_steps
    assert r.episode.done and len(r.prompt_ids) == r.num_steps
