"""The scripted expert: perfect without mistakes, worse with them, in the intended ways."""

import statistics

import pytest

from steptool_jax.data import render
from steptool_jax.data.records import AnswerStatus
from steptool_jax.envs import episode as env
from steptool_jax.envs import judge
from steptool_jax.envs.expert import MISTAKE_KINDS, PLANS, Mistakes, run_expert
from steptool_jax.envs.tasks import TEMPLATES, generate_tasks
from steptool_jax.rewards import rules


@pytest.fixture(scope="module")
def all_tasks():
  return [t for ts in generate_tasks(500, seed=7).values() for t in ts]


def _verdicts(tasks, mistakes, **kwargs):
  return [judge.judge(t, run_expert(t, mistakes=mistakes, **kwargs).episode.trajectory()) for t in tasks]


def test_every_template_has_a_plan_of_its_length():
  assert set(PLANS) == set(TEMPLATES)
  for name, plan in PLANS.items():
    assert len(plan.steps) == TEMPLATES[name].num_calls


def test_without_mistakes_every_task_is_solved_with_full_rewards(all_tasks):
  assert {t.template for t in all_tasks} == set(TEMPLATES)
  for task, verdict in zip(all_tasks, _verdicts(all_tasks, Mistakes(0.0))):
    assert verdict.status is AnswerStatus.SOLVED, task
    assert verdict.tool_recall == 1.0
    # Every call succeeds and contributes to the answer: (SC 1 + Con 1) / 2 = 1, then Solved = 1.
    assert verdict.step_rewards == (1.0,) * (TEMPLATES[task.template].num_calls + 1), task


def test_pass_rate_drops_as_the_mistake_rate_rises(all_tasks):
  tasks = all_tasks[::2]
  rates = [statistics.fmean(v.solved for v in _verdicts(tasks, Mistakes(rate))) for rate in (0.0, 0.1, 0.3, 0.5)]
  assert rates[0] == 1.0
  assert rates[0] > rates[1] > rates[2] > rates[3]
  assert rates[3] < 0.6


def test_actions_are_exactly_the_rendered_responses(all_tasks):
  for task in all_tasks[:80]:
    episode = run_expert(task, mistakes=Mistakes(0.4)).episode
    _, responses = render.render_steps(episode.trajectory(), "toolllama", system_prompt=env.system_prompt(task))
    assert responses == episode.actions


def _only(kind, rate):
  return Mistakes(rate, {kind: 1.0})


def test_giving_up(all_tasks):
  for task in all_tasks[:40]:
    episode = run_expert(task, mistakes=_only("give_up", 1.0)).episode
    assert episode.num_steps == 1 and episode.trajectory().final_answer.gave_up


def test_missing_facts_are_never_solved(all_tasks):
  verdicts = _verdicts(all_tasks[:100], _only("missing_fact", 1.0))
  assert not any(v.solved for v in verdicts)
  two_facts = [v for t, v in zip(all_tasks, verdicts) if len(t.gold_facts) == 2]
  assert two_facts and all(v.status is AnswerStatus.UNSURE for v in two_facts)


@pytest.mark.parametrize("kind", ["distractor", "malformed", "redundant"])
def test_recoverable_mistakes_waste_steps_but_still_solve(all_tasks, kind):
  tasks = [t for t in all_tasks if TEMPLATES[t.template].num_calls >= 2][:60]
  config = env.EnvConfig(max_steps=60)
  clean = [run_expert(t, config=config).episode.num_steps for t in tasks]
  runs = [run_expert(t, mistakes=_only(kind, 0.5), config=config) for t in tasks]
  assert sum(r.episode.num_steps for r in runs) > sum(clean)
  assert any(kind in r.mistakes for r in runs)
  verdicts = [judge.judge(t, r.episode.trajectory()) for t, r in zip(tasks, runs)]
  assert all(v.solved for v in verdicts)
  failed_calls = sum(v.succ_calling.count(0) for v in verdicts)
  if kind == "malformed":
    assert failed_calls >= sum(r.mistakes.count("malformed") for r in runs)
  if kind == "distractor":
    # Calls the task did not need: recall stays 1, but the rule gives them no Contribution.
    extra = [(t, r) for t, r in zip(tasks, runs) if "distractor" in r.mistakes]
    useless = [c for t, r in extra for c in r.episode.trajectory().calls if c.name not in t.relevant_tools]
    assert useless
    answers = {t.task_id: r.episode.trajectory().final_answer.final_answer for t, r in extra}
    contributions = [rules.contribution(c.response, answers[t.task_id])
                     for t, r in extra for c in r.episode.trajectory().calls if c.name not in t.relevant_tools]
    assert statistics.fmean(contributions) < 0.1


def test_wrong_arguments_carry_into_the_answer(all_tasks):
  verdicts = _verdicts(all_tasks[:150], _only("wrong_arguments", 0.5))
  assert 0.2 < statistics.fmean(v.solved for v in verdicts) < 0.95


def test_deterministic_in_the_seed(all_tasks):
  task = next(t for t in all_tasks if TEMPLATES[t.template].num_calls == 3)
  runs = [run_expert(task, mistakes=Mistakes(0.5), seed=s).episode.actions for s in (0, 0, 1, 2, 3)]
  assert runs[0] == runs[1]
  assert len(set(runs)) > 2


def test_mistake_configuration_is_checked():
  with pytest.raises(ValueError):
    Mistakes(1.5)
  with pytest.raises(ValueError):
    Mistakes(0.1, {"typo": 1.0})
  assert set(Mistakes().weights) == set(MISTAKE_KINDS)
