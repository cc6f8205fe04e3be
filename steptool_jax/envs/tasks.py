"""Tasks: user queries generated from templates, with gold facts and deterministic splits.

A template asks for something that takes 1, 2 or 3 tool calls, where later calls need a
value only an earlier call reveals (the cheapest flight's price, a hotel's local currency,
two populations to subtract). Its gold facts are computed from the tables along the same
path a correct agent takes, so a correct final answer must contain each of them.

Splits (the spirit of ToolBench's I1/I2/I3): `train` and `validation` draw seen templates
over seen entities; `test` holds out half its tasks on entities (cities and currencies)
that never appear in train/validation, and half on templates that never do. No task (a
template with its parameters; phrasing aside) appears in two splits. With
`test_entities="seen"` the test split is drawn like validation instead (seen templates, seen
entities, new parameters): a held-out split for policies that cannot be expected to copy
an entity they never saw, such as a small model trained from scratch.
"""

from __future__ import annotations

import dataclasses
import os
import random
from typing import Any, Callable, Iterator, Mapping, Sequence

from steptool_jax.data.errors import DataError, describe
from steptool_jax.data.files import read_utf8_text
from steptool_jax.data.jsonio import JSONDepthError, loads_checked
from steptool_jax.data.records import ToolSpec
from steptool_jax.data.toolbench import parse_tool
from steptool_jax.envs import calculator, units
from steptool_jax.envs.tables import DAYS, Tables, load_tables
from steptool_jax.envs.tools import FINISH_SPEC, TOOLS, convert_money, exchange_rate

SPLITS = ("train", "validation", "test")
SEEN, UNSEEN_ENTITIES, UNSEEN_TEMPLATES = "seen", "unseen_entities", "unseen_templates"
TEST_ENTITIES = ("unseen", "seen")  # generate_tasks(test_entities=...)

CITY_FACTS = "get_city_facts_for_city_info"
DAILY_FORECAST = "get_daily_forecast_for_weather"
EXCHANGE_RATE = "get_exchange_rate_for_currency_exchange"
SEARCH_FLIGHTS = "search_flights_for_flight_search"
SEARCH_HOTELS = "search_hotels_for_hotel_finder"
CONVERT_CURRENCY = "convert_currency_for_currency_exchange"
CONVERT_UNITS = "convert_units_for_unit_converter"
CALCULATE = "calculate_for_calculator"


def format_number(value: float) -> str:
  """How numbers appear in gold facts and in the expert's answers: as the tools print them."""
  return str(value)


@dataclasses.dataclass(frozen=True)
class Task:
  """One query of the environment.

  `params` are the template's entities (what the scripted expert plans with);
  `gold_facts` are strings a correct final answer must contain (numbers compare
  numerically, text case-insensitively); `tools` are the functions offered to the agent
  (the relevant ones, distractors, and `Finish` last).
  """

  task_id: str
  split: str
  generalization: str
  template: str
  query: str
  params: Mapping[str, Any]
  gold_facts: tuple[str, ...]
  relevant_tools: tuple[str, ...]
  tools: tuple[ToolSpec, ...]

  @property
  def tool_names(self) -> tuple[str, ...]:
    return tuple(tool.name for tool in self.tools)

  def to_json(self) -> dict[str, Any]:
    return {
        "task_id": self.task_id, "split": self.split, "generalization": self.generalization,
        "template": self.template, "query": self.query, "params": dict(self.params),
        "gold_facts": list(self.gold_facts), "relevant_tools": list(self.relevant_tools),
        "tools": [tool.to_openai() for tool in self.tools],
    }

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> "Task":
    tools = tuple(
        ToolSpec(name=t["function"]["name"], description=t["function"].get("description", ""),
                 parameters=t["function"].get("parameters", {}))
        for t in data["tools"])
    return cls(task_id=data["task_id"], split=data["split"], generalization=data["generalization"],
               template=data["template"], query=data["query"], params=dict(data["params"]),
               gold_facts=tuple(data["gold_facts"]), relevant_tools=tuple(data["relevant_tools"]),
               tools=tools)


@dataclasses.dataclass(frozen=True)
class Template:
  """A family of tasks: how to sample parameters, phrase the query, and compute the gold facts.

  `sample` returns None when the drawn entities do not fit (no such route, say); the
  generator then draws again.
  """

  name: str
  relevant_tools: tuple[str, ...]
  phrasings: tuple[str, ...]
  sample: Callable[[random.Random, "EntityPool", Tables], dict[str, Any] | None]
  gold: Callable[[Mapping[str, Any], Tables], tuple[Any, ...]]

  @property
  def num_calls(self) -> int:
    """Calls a perfect agent makes (a tool may be used twice: two cities, two days)."""
    return _NUM_CALLS[self.name]


@dataclasses.dataclass(frozen=True)
class EntityPool:
  """The cities and currencies a split may use."""

  cities: tuple[str, ...]
  currencies: tuple[str, ...]


# -- helpers over the tables ------------------------------------------------------------------


def _cheapest_flight(tables: Tables, origin: str, destination: str) -> Mapping[str, Any]:
  return min(tables.flights_between(origin, destination), key=lambda f: f["price_usd"])


def _shortest_flight(tables: Tables, origin: str, destination: str) -> Mapping[str, Any]:
  return min(tables.flights_between(origin, destination), key=lambda f: f["duration_min"])


def _cheapest_hotel(tables: Tables, city: str, min_stars: int) -> Mapping[str, Any] | None:
  hotels = [h for h in tables.hotels_in(city) if h["stars"] >= min_stars]
  return min(hotels, key=lambda h: h["price_per_night"]) if hotels else None


def _day_forecast(tables: Tables, city: str, day: str) -> Mapping[str, Any]:
  return next(row for row in tables.weather[city] if row["day"] == day)


def _currency_of(tables: Tables, city: str) -> str:
  return tables.city(city)["currency"]


def _route(rng: random.Random, pool: EntityPool, tables: Tables) -> dict[str, Any] | None:
  routes = [r for r in tables.routes if r[0] in pool.cities and r[1] in pool.cities]
  origin, destination = rng.choice(routes)
  return {"origin": origin, "destination": destination}


# -- the templates ----------------------------------------------------------------------------


def _sample_city(rng, pool, tables):
  del tables
  return {"city": rng.choice(pool.cities)}


def _sample_city_day(rng, pool, tables):
  del tables
  return {"city": rng.choice(pool.cities), "day": rng.choice(DAYS)}


def _sample_exchange_rate(rng, pool, tables):
  del tables
  base, target = rng.sample(pool.currencies, 2)
  return {"base": base, "target": target}


def _sample_flight_currency(rng, pool, tables):
  params = _route(rng, pool, tables)
  if params is None:
    return None
  currency = rng.choice(pool.currencies)
  return None if currency == "USD" else {**params, "currency": currency}


def _gold_flight_currency(p, tables):
  flight = _cheapest_flight(tables, p["origin"], p["destination"])
  return flight["flight_number"], convert_money(tables, flight["price_usd"], "USD", p["currency"])


def _sample_hotel(rng, pool, tables, *, with_nights=False):
  city = rng.choice(pool.cities)
  if _currency_of(tables, city) == "USD":
    return None
  params = {"city": city, "min_stars": rng.randint(2, 4)}
  if _cheapest_hotel(tables, city, params["min_stars"]) is None:
    return None
  if with_nights:
    params["nights"] = rng.randint(2, 6)
  return params


def _gold_hotel_usd(p, tables):
  hotel = _cheapest_hotel(tables, p["city"], p["min_stars"])
  return hotel["name"], convert_money(tables, hotel["price_per_night"], hotel["currency"], "USD")


def _gold_hotel_stay(p, tables):
  hotel = _cheapest_hotel(tables, p["city"], p["min_stars"])
  local_total = calculator.calculate(f"{hotel['price_per_night']} * {p['nights']}")
  return hotel["name"], convert_money(tables, local_total, hotel["currency"], "USD")


def _sample_flight_local(rng, pool, tables):
  params = _route(rng, pool, tables)
  if params is None or _currency_of(tables, params["destination"]) == "USD":
    return None
  if _currency_of(tables, params["destination"]) not in pool.currencies:
    return None
  return params


def _gold_flight_local(p, tables):
  flight = _cheapest_flight(tables, p["origin"], p["destination"])
  currency = _currency_of(tables, p["destination"])
  return flight["flight_number"], convert_money(tables, flight["price_usd"], "USD", currency)


def _sample_population_difference(rng, pool, tables):
  a, b = rng.sample(pool.cities, 2)
  if tables.city(a)["population"] < tables.city(b)["population"]:
    a, b = b, a
  return {"larger": a, "smaller": b}


def _gold_population_difference(p, tables):
  return (calculator.calculate(
      f"{tables.city(p['larger'])['population']} - {tables.city(p['smaller'])['population']}"),)


def _sample_rain_total(rng, pool, tables):
  city = rng.choice(pool.cities)
  day1, day2 = sorted(rng.sample(DAYS, 2), key=DAYS.index)
  if _day_forecast(tables, city, day1)["rain_mm"] + _day_forecast(tables, city, day2)["rain_mm"] == 0:
    return None  # "0 mm" would be matched by any stray zero in an answer
  return {"city": city, "day1": day1, "day2": day2}


def _gold_rain_total(p, tables):
  r1 = _day_forecast(tables, p["city"], p["day1"])["rain_mm"]
  r2 = _day_forecast(tables, p["city"], p["day2"])["rain_mm"]
  return (calculator.calculate(f"{r1} + {r2}"),)


TEMPLATES: dict[str, Template] = {t.name: t for t in (
    Template(
        "city_population", (CITY_FACTS,),
        ("What is the population of {city}?", "How many people live in {city}?"),
        _sample_city, lambda p, t: (t.city(p["city"])["population"],)),
    Template(
        "daily_weather", (DAILY_FORECAST,),
        ("What will the weather be like in {city} on {day}? Tell me the sky and the high temperature.",
         "I am in {city} on {day}. What sky and what high temperature are forecast?"),
        _sample_city_day,
        lambda p, t: (_day_forecast(t, p["city"], p["day"])["condition"],
                      _day_forecast(t, p["city"], p["day"])["high_c"])),
    Template(
        "exchange_rate", (EXCHANGE_RATE,),
        ("How many {target} does one {base} buy?",
         "What is the exchange rate from {base} to {target}?"),
        _sample_exchange_rate, lambda p, t: (exchange_rate(t, p["base"], p["target"]),)),
    Template(
        "cheapest_flight", (SEARCH_FLIGHTS,),
        ("What is the cheapest flight from {origin} to {destination}, and what does it cost?",
         "Find me the lowest-priced flight from {origin} to {destination} and its price."),
        _route,
        lambda p, t: (_cheapest_flight(t, p["origin"], p["destination"])["flight_number"],
                      _cheapest_flight(t, p["origin"], p["destination"])["price_usd"])),
    Template(
        "cheapest_flight_in_currency", (SEARCH_FLIGHTS, CONVERT_CURRENCY),
        ("Find the cheapest flight from {origin} to {destination} and tell me its price in {currency}.",
         "I want to fly from {origin} to {destination} as cheaply as possible. Which flight is it and "
         "what is its price in {currency}?"),
        _sample_flight_currency, _gold_flight_currency),
    Template(
        "high_in_fahrenheit", (DAILY_FORECAST, CONVERT_UNITS),
        ("What high temperature is forecast in {city} on {day}, in degrees Fahrenheit?",
         "How warm will it get in {city} on {day}? Please answer in Fahrenheit."),
        _sample_city_day,
        lambda p, t: (units.convert_units(_day_forecast(t, p["city"], p["day"])["high_c"], "C", "F"),)),
    Template(
        "cheapest_hotel_in_usd", (SEARCH_HOTELS, CONVERT_CURRENCY),
        ("Find the cheapest hotel in {city} with at least {min_stars} stars and tell me its nightly "
         "price in US dollars.",
         "Which hotel with {min_stars} or more stars is cheapest in {city}, and what is a night there "
         "in US dollars?"),
        _sample_hotel, _gold_hotel_usd),
    Template(
        "hotel_stay_in_usd", (SEARCH_HOTELS, CALCULATE, CONVERT_CURRENCY),
        ("I want to stay {nights} nights in {city} at the cheapest hotel with at least {min_stars} "
         "stars. Which hotel is it, and what does the whole stay cost in US dollars?",
         "What would {nights} nights at the cheapest hotel in {city} with {min_stars} or more stars "
         "cost in US dollars? Name the hotel too."),
        lambda r, p, t: _sample_hotel(r, p, t, with_nights=True), _gold_hotel_stay),
    Template(
        "flight_in_local_currency", (CITY_FACTS, SEARCH_FLIGHTS, CONVERT_CURRENCY),
        ("What does the cheapest flight from {origin} to {destination} cost in the local currency of "
         "{destination}?",
         "I fly from {origin} to {destination}. Which flight is cheapest, and what is its price in "
         "the currency used in {destination}?"),
        _sample_flight_local, _gold_flight_local),
    Template(
        "population_difference", (CITY_FACTS, CALCULATE),
        ("How many more people live in {larger} than in {smaller}?",
         "What is the difference between the populations of {larger} and {smaller}?"),
        _sample_population_difference, _gold_population_difference),
    # Held out: only ever in the test split.
    Template(
        "shortest_flight_hours", (SEARCH_FLIGHTS, CONVERT_UNITS),
        ("Which is the shortest flight from {origin} to {destination}, and how many hours does it take?",
         "Find the quickest flight from {origin} to {destination} and give its duration in hours."),
        _route,
        lambda p, t: (_shortest_flight(t, p["origin"], p["destination"])["flight_number"],
                      units.convert_units(
                          _shortest_flight(t, p["origin"], p["destination"])["duration_min"], "min", "h"))),
    Template(
        "rain_total", (DAILY_FORECAST, CALCULATE),
        ("How much rain is expected in {city} on {day1} and {day2} together, in mm?",
         "Add up the rain forecast for {city} on {day1} and on {day2}: how many mm in total?"),
        _sample_rain_total, _gold_rain_total),
)}

_NUM_CALLS = {
    "city_population": 1, "daily_weather": 1, "exchange_rate": 1, "cheapest_flight": 1,
    "cheapest_flight_in_currency": 2, "high_in_fahrenheit": 2, "cheapest_hotel_in_usd": 2,
    "hotel_stay_in_usd": 3, "flight_in_local_currency": 3, "population_difference": 3,
    "shortest_flight_hours": 2, "rain_total": 3,
}
HELD_OUT_TEMPLATES = ("shortest_flight_hours", "rain_total")
SEEN_TEMPLATES = tuple(name for name in TEMPLATES if name not in HELD_OUT_TEMPLATES)


# -- generation -------------------------------------------------------------------------------


def entity_pools(tables: Tables) -> tuple[EntityPool, EntityPool]:
  """(seen, all): held-out cities and the currencies only they use are absent from `seen`."""
  seen_cities = tuple(row["city"] for row in tables.cities if not row["held_out"])
  seen_currencies = tuple(sorted({"USD"} | {_currency_of(tables, c) for c in seen_cities}))
  all_cities = tuple(row["city"] for row in tables.cities)
  all_currencies = tuple(row["code"] for row in tables.currencies)
  return EntityPool(seen_cities, seen_currencies), EntityPool(all_cities, all_currencies)


def _uses_held_out(params: Mapping[str, Any], seen: EntityPool, tables: Tables) -> bool:
  for value in params.values():
    if isinstance(value, str) and tables.city(value) is not None and value not in seen.cities:
      return True
    if isinstance(value, str) and value in tables.currency_by_code and value not in seen.currencies:
      return True
  for key in ("destination", "city"):  # currencies named indirectly ("the local currency")
    if key in params and _currency_of(tables, params[key]) not in seen.currencies:
      return True
  return False


# Parameters a policy passes on verbatim as arguments (quoted with `quote_entities`).
_ENTITY_KEYS = ("city", "day", "day1", "day2", "origin", "destination", "larger", "smaller")


def _query_params(params: Mapping[str, Any], tables: Tables, quote_entities: bool = False) -> dict[str, Any]:
  """Currencies are asked for by name, with the code ("euros (EUR)", "one euro (EUR)").

  `quote_entities` writes cities and days in double quotes, as they appear in JSON
  arguments: a byte-level BPE then spells them with the same tokens in the query and in
  the call (` Seoul` and `Seoul` are different tokens), so a model copies instead of
  translating."""
  shown = dict(params)
  if quote_entities:
    for key in _ENTITY_KEYS:
      if key in shown:
        shown[key] = f'"{shown[key]}"'

  for key, form in (("currency", "plural"), ("target", "plural"), ("base", "name")):
    if key in shown:
      shown[key] = f"{tables.currency_by_code[shown[key]][form]} ({shown[key]})"
  return shown


def _tool_set(rng: random.Random, relevant: Sequence[str]) -> tuple[ToolSpec, ...]:
  others = [name for name in TOOLS if name not in relevant]
  names = list(relevant) + rng.sample(others, rng.randint(2, 3))
  rng.shuffle(names)
  return tuple(TOOLS[name].spec for name in names) + (FINISH_SPEC,)


def _draws(rng: random.Random, templates: Sequence[str], pool: EntityPool, tables: Tables
           ) -> Iterator[tuple[Template, dict[str, Any]]]:
  while True:
    template = TEMPLATES[rng.choice(templates)]
    params = template.sample(rng, pool, tables)
    if params is not None:
      yield template, params


def _task_key(template: Template, params: Mapping[str, Any]) -> tuple[Any, ...]:
  return (template.name, *sorted(params.items()))


_MAX_MISSES = 2000


def generate_tasks(num_tasks: int, seed: int, *, validation_fraction: float = 0.1,
                   test_fraction: float = 0.1, tables: Tables | None = None,
                   templates: Sequence[str] | None = None, hold_out_templates: bool = True,
                   quote_entities: bool = False, test_entities: str = "unseen") -> dict[str, tuple[Task, ...]]:
  """`num_tasks` distinct tasks split into train / validation / test. Deterministic in `seed`.

  `templates` restricts the task mix (default: all twelve): train and validation draw its
  seen templates; the test split's `unseen_templates` half draws its held-out ones, and
  when it has none, the whole test split is `unseen_entities`. `hold_out_templates=False`
  makes every template of the mix a seen one (the test split then holds out entities only).
  `quote_entities`: see `_query_params`. `test_entities="seen"` draws the test split's
  seen-template part from seen entities, like validation (module docstring).

  Raises:
    ValueError: when the templates cannot make that many distinct tasks for a split, or a
      template name is unknown.
  """
  if num_tasks < 1:
    raise ValueError(f"num_tasks must be positive; got {num_tasks}")
  if test_entities not in TEST_ENTITIES:
    raise ValueError(f"test_entities: expected one of {TEST_ENTITIES}, found {test_entities!r}")
  for name, fraction in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
    if not 0 <= fraction < 1:
      raise ValueError(f"{name}: expected a fraction in [0, 1), found {fraction}")
  if validation_fraction + test_fraction >= 1:
    raise ValueError(f"validation_fraction + test_fraction: expected < 1 (train needs tasks), "
                     f"found {validation_fraction} + {test_fraction}")
  chosen = tuple(TEMPLATES) if not templates else tuple(templates)
  unknown = sorted(set(chosen) - set(TEMPLATES))
  if unknown:
    raise ValueError(f"templates: unknown {unknown}; expected some of {sorted(TEMPLATES)}")
  held_out = HELD_OUT_TEMPLATES if hold_out_templates else ()
  seen_templates = tuple(t for t in TEMPLATES if t in chosen and t not in held_out)
  held_out_templates = tuple(t for t in held_out if t in chosen)
  if not seen_templates:
    raise ValueError(f"templates: expected at least one template that is not held out, found {chosen}")
  tables = tables or load_tables()
  seen, everything = entity_pools(tables)
  num_val = round(num_tasks * validation_fraction)
  num_test = round(num_tasks * test_fraction)
  num_train = num_tasks - num_val - num_test
  held_out_count = num_test - num_test // 2 if held_out_templates else 0
  plan = (  # (split, generalization, count, templates, pool)
      ("train", SEEN, num_train, seen_templates, seen),
      ("validation", SEEN, num_val, seen_templates, seen),
      ("test", UNSEEN_ENTITIES, num_test - held_out_count, seen_templates, everything)
      if test_entities == "unseen" else ("test", SEEN, num_test - held_out_count, seen_templates, seen),
      ("test", UNSEEN_TEMPLATES, held_out_count, held_out_templates, seen),
  )
  used: set[tuple[Any, ...]] = set()
  splits: dict[str, list[Task]] = {split: [] for split in SPLITS}
  for split, generalization, count, split_templates, pool in plan:
    rng = random.Random(f"steptool-env-tasks:{seed}:{split}:{generalization}")
    draws = _draws(rng, split_templates, pool, tables)
    misses = 0  # consecutive draws that gave no new task: the space is (nearly) exhausted
    made = 0
    while made < count:
      if misses > _MAX_MISSES:
        raise ValueError(
            f"could only make {made} distinct {split} tasks ({generalization}) of {count} asked; "
            f"ask for fewer tasks")
      template, params = next(draws)
      key = _task_key(template, params)
      if key in used or (generalization == UNSEEN_ENTITIES) != _uses_held_out(params, seen, tables):
        misses += 1
        continue
      misses = 0
      used.add(key)
      phrasing = rng.choice(template.phrasings)
      task_id = f"{split}-{len(splits[split]):06d}"
      splits[split].append(Task(
          task_id=task_id, split=split, generalization=generalization, template=template.name,
          query=phrasing.format(**_query_params(params, tables, quote_entities)), params=params,
          gold_facts=tuple(format_number(v) if not isinstance(v, str) else v
                           for v in template.gold(params, tables)),
          relevant_tools=template.relevant_tools, tools=_tool_set(rng, template.relevant_tools)))
      made += 1
  return {split: tuple(tasks) for split, tasks in splits.items()}


def read_tasks(path: str | os.PathLike[str]) -> list[Task]:
  """The tasks of a `tasks/{split}.jsonl` file (one `Task.to_json` object a line), checked.

  Total like the data readers: any bytes give the tasks or a `DataError` naming the line
  (the row) and the field; a task id given twice, or a key twice within a line, is an
  error (an evaluation would count that task twice, or read only one of the values).

  Raises:
    DataError: the first bad line (there is no skipping: an evaluation runs on all or none).
  """
  text = read_utf8_text(path, expected="tasks (one JSON object a line)")
  tasks: list[Task] = []
  seen: dict[str, int] = {}
  for number, line in enumerate(text.split("\n"), start=1):
    if not line.strip():
      continue
    try:
      data, duplicates = loads_checked(line, max_depth=64)
    except (ValueError, JSONDepthError) as e:  # JSONDecodeError, too deep, too many digits
      raise DataError(path, number, "line", f"expected a JSON object, found {e}") from None
    if duplicates:
      raise DataError(path, number, duplicates[0].key, f"expected each key once, found it {duplicates[0].count} times")
    if not isinstance(data, dict):
      raise DataError(path, number, "line", f"expected a task object, found {describe(data)}")

    def field(name: str, kind: type, *, of: type | None = None) -> Any:
      value = data.get(name)
      if not isinstance(value, kind) or (of is not None and not all(isinstance(v, of) for v in value)):
        expected = f"a list of {of.__name__}" if of is not None else f"a {kind.__name__}"
        raise DataError(path, number, name, f"expected {expected}, found {describe(value)}")
      return value

    task_id = field("task_id", str)
    if task_id in seen:
      raise DataError(path, number, "task_id", f"expected each task id once, found {task_id!r} also on line"
                      f" {seen[task_id]}")
    seen[task_id] = number
    choices = {"split": SPLITS, "generalization": (SEEN, UNSEEN_ENTITIES, UNSEEN_TEMPLATES), "template": TEMPLATES}
    for name, allowed in choices.items():
      if field(name, str) not in allowed:
        raise DataError(path, number, name, f"expected one of {', '.join(allowed)}, found {describe(data[name])}")
    tools = tuple(parse_tool(path, number, f"tools[{i}]", tool) for i, tool in enumerate(field("tools", list)))
    tasks.append(Task(task_id=task_id, split=data["split"], generalization=data["generalization"],
                      template=data["template"], query=field("query", str), params=dict(field("params", dict)),
                      gold_facts=tuple(field("gold_facts", list, of=str)),
                      relevant_tools=tuple(field("relevant_tools", list, of=str)), tools=tools))
  return tasks
