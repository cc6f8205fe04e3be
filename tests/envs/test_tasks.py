"""Task generation: deterministic, disjoint splits, held-out entities and templates."""

import json

import pytest

from steptool_jax.envs import tasks as T
from steptool_jax.envs.tables import load_tables
from steptool_jax.envs.tools import TOOLS


@pytest.fixture(scope="module")
def splits():
  return T.generate_tasks(400, seed=3)


def _key(task):
  return (task.template, tuple(sorted(task.params.items())))


def test_same_seed_same_tasks_other_seed_other_tasks(splits):
  assert T.generate_tasks(400, seed=3) == splits
  other = T.generate_tasks(400, seed=4)
  assert [t.query for t in other["train"]] != [t.query for t in splits["train"]]


def test_split_sizes_and_ids(splits):
  assert {k: len(v) for k, v in splits.items()} == {"train": 320, "validation": 40, "test": 40}
  assert [t.task_id for t in splits["validation"]][:2] == ["validation-000000", "validation-000001"]
  assert all(t.split == split for split, ts in splits.items() for t in ts)


def test_splits_are_disjoint(splits):
  keys = {split: {_key(t) for t in ts} for split, ts in splits.items()}
  assert sum(len(k) for k in keys.values()) == 400  # no duplicates inside a split either
  assert not keys["train"] & keys["validation"]
  assert not keys["train"] & keys["test"] and not keys["validation"] & keys["test"]


def test_test_split_holds_out_entities_and_templates(splits):
  tables = load_tables()
  held_cities = {row["city"] for row in tables.cities if row["held_out"]}
  held_currencies = {"ZAR", "TRY", "THB"}

  def mentions_held_out(task):
    words = set(task.params.values()) | {tables.city(v)["currency"] for v in task.params.values()
                                         if isinstance(v, str) and tables.city(v)}
    return bool(words & (held_cities | held_currencies))

  for task in splits["train"] + splits["validation"]:
    assert task.generalization == "seen" and task.template not in T.HELD_OUT_TEMPLATES
    assert not mentions_held_out(task), task
    assert not any(city in task.query for city in held_cities)
  groups = {g: [t for t in splits["test"] if t.generalization == g] for g in ("unseen_entities", "unseen_templates")}
  assert len(groups["unseen_entities"]) == 20 and len(groups["unseen_templates"]) == 20
  assert all(mentions_held_out(t) and t.template in T.SEEN_TEMPLATES for t in groups["unseen_entities"])
  assert all(t.template in T.HELD_OUT_TEMPLATES and not mentions_held_out(t) for t in groups["unseen_templates"])


def test_tasks_need_one_to_three_calls_and_offer_their_tools(splits):
  all_tasks = [t for ts in splits.values() for t in ts]
  assert {T.TEMPLATES[t.template].num_calls for t in all_tasks} == {1, 2, 3}
  for task in all_tasks:
    assert task.tool_names[-1] == "Finish"
    offered = set(task.tool_names[:-1])
    assert set(task.relevant_tools) <= offered <= set(TOOLS)
    assert 2 <= len(offered - set(task.relevant_tools)) <= 3  # distractors
    assert task.gold_facts and all(isinstance(f, str) and f for f in task.gold_facts)


def test_gold_facts_by_hand():
  tables = load_tables()
  # Paris -> Berlin: cheapest LH3452 at 139.94 USD; in euros 139.94 * 0.92 = 128.7448.
  gold = T.TEMPLATES["cheapest_flight_in_currency"].gold(
      {"origin": "Paris", "destination": "Berlin", "currency": "EUR"}, tables)
  assert gold == ("LH3452", 128.74)
  # Cheapest 3-star-or-better hotel in Paris: Royal Palace Paris, 123.82 EUR; 3 nights = 371.46 EUR
  # = 403.76 USD at 1.086957.
  assert T.TEMPLATES["hotel_stay_in_usd"].gold({"city": "Paris", "min_stars": 3, "nights": 3}, tables) == (
      "Royal Palace Paris", 403.76)
  # Tokyo 14094034 - Paris 2102650.
  assert T.TEMPLATES["population_difference"].gold({"larger": "Tokyo", "smaller": "Paris"}, tables) == (
      11991384,)
  # Paris -> Berlin shortest: AF3139, 102 min = 1.7 h.
  assert T.TEMPLATES["shortest_flight_hours"].gold({"origin": "Paris", "destination": "Berlin"}, tables) == (
      "AF3139", 1.7)


def test_json_round_trip(splits):
  for task in splits["test"][:10]:
    assert T.Task.from_json(json.loads(json.dumps(task.to_json()))) == task


def test_asking_for_more_tasks_than_exist_is_an_error():
  with pytest.raises(ValueError, match="distinct"):
    T.generate_tasks(1000, seed=0, validation_fraction=0.0, test_fraction=0.9)  # > 404 held-out-template tasks
  with pytest.raises(ValueError):
    T.generate_tasks(0, seed=0)
