"""A scripted expert that solves every task, and makes mistakes at a chosen rate.

The expert plays through the episode API like any agent: it writes action texts and
reads the tool observations, and every value it passes on (a price to convert, a total to
add up) comes from an observation, not from the tables. So a mistake early in an episode
propagates the way it would for a model.

Mistakes, the ways the paper says expert trajectories are imperfect:
- `distractor`: calls an offered tool the task does not need (a wasted step);
- `malformed`: broken JSON, a dropped required argument, or a misspelled function name
  (an error observation; the expert then retries the step correctly);
- `wrong_arguments`: plausible but wrong values (another city, day or currency, a slipped
  decimal, the wrong sort order); when the tool still answers, the expert trusts the
  answer and carries the error into the final answer;
- `redundant`: repeats its previous call;
- `give_up`: ends with `give_up_and_restart`;
- `missing_fact`: leaves one of the asked-for facts out of the final answer.
At each decision, with probability `rate`, one applicable kind is drawn (by `weights`).
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Callable, Mapping, Sequence

from steptool_jax.data.records import FINISH, GIVE_ANSWER, GIVE_UP
from steptool_jax.envs import episode as env
from steptool_jax.envs import react, tasks
from steptool_jax.envs.tables import DAYS, Tables, load_tables
from steptool_jax.envs.tasks import Task, format_number
from steptool_jax.envs.tools import TOOLS

MISTAKE_KINDS = ("distractor", "malformed", "wrong_arguments", "redundant", "give_up", "missing_fact")
_CALL_KINDS = ("distractor", "malformed", "wrong_arguments", "redundant", "give_up")
_FINAL_KINDS = ("missing_fact", "give_up")

Call = tuple[str, dict[str, Any], str]  # function name, arguments, thought
Params = Mapping[str, Any]
Results = Sequence[Any]  # the `response` payloads of the plan's calls so far


@dataclasses.dataclass(frozen=True)
class Mistakes:
  """How often the expert errs: `rate` per decision, the kind drawn by `weights`."""

  rate: float = 0.0
  weights: Mapping[str, float] = dataclasses.field(
      default_factory=lambda: {kind: 0.5 if kind == "give_up" else 1.0 for kind in MISTAKE_KINDS})

  def __post_init__(self):
    if not 0.0 <= self.rate <= 1.0:
      raise ValueError(f"mistake rate must be in [0, 1]; got {self.rate}")
    unknown = set(self.weights) - set(MISTAKE_KINDS)
    if unknown:
      raise ValueError(f"unknown mistake kinds {sorted(unknown)}; known: {', '.join(MISTAKE_KINDS)}")

  def draw(self, rng: random.Random, kinds: Sequence[str]) -> str | None:
    if self.rate == 0.0 or rng.random() >= self.rate:
      return None
    kinds = [kind for kind in kinds if self.weights.get(kind, 0.0) > 0]
    if not kinds:
      return None
    return rng.choices(kinds, weights=[self.weights[kind] for kind in kinds])[0]


@dataclasses.dataclass(frozen=True)
class Plan:
  """A template's solution: the calls in order, then the final answer.

  Each step sees the responses of the earlier steps; the answer is a list of sentences,
  sentence i stating gold fact i (so a `missing_fact` mistake can drop exactly one).
  """

  steps: tuple[Callable[[Params, Results], Call], ...]
  answer: Callable[[Params, Results], list[str]]


# -- the plans --------------------------------------------------------------------------------
#
# The final answers restate the values of every call they rely on, in the order the tool
# printed them: a thorough answer, and one whose word-level overlap with each useful
# observation is what the rule annotator's Contribution looks for.

def _n(value: Any) -> str:
  return format_number(value)


def _top(result: Mapping[str, Any], key: str) -> Mapping[str, Any]:
  return result[key][0]


def _search_flights(sort_by: str) -> Callable[[Params, Results], Call]:
  def call(p: Params, r: Results) -> Call:
    del r
    goal = {"price": "cheapest", "duration": "shortest"}[sort_by]
    return (tasks.SEARCH_FLIGHTS,
            {"origin": p["origin"], "destination": p["destination"], "sort_by": sort_by, "limit": 1},
            f"I need the {goal} flight from {p['origin']} to {p['destination']}: I search flights sorted "
            f"by {sort_by} and keep the first.")
  return call


def _search_hotels(p: Params, r: Results) -> Call:
  del r
  return (tasks.SEARCH_HOTELS, {"city": p["city"], "min_stars": p["min_stars"], "sort_by": "price", "limit": 1},
          f"I search the cheapest hotel in {p['city']} with at least {p['min_stars']} stars.")


def _forecast(day_key: str) -> Callable[[Params, Results], Call]:
  def call(p: Params, r: Results) -> Call:
    del r
    return (tasks.DAILY_FORECAST, {"city": p["city"], "day": p[day_key]},
            f"I get the forecast for {p['city']} on {p[day_key]}.")
  return call


def _facts(city_key: str, why: str) -> Callable[[Params, Results], Call]:
  def call(p: Params, r: Results) -> Call:
    del r
    return tasks.CITY_FACTS, {"city": p[city_key]}, f"I look up {p[city_key]} {why}."
  return call


def _convert_flight_price(flights: int, target: Callable[[Params, Results], str]
                          ) -> Callable[[Params, Results], Call]:
  def call(p: Params, r: Results) -> Call:
    flight = _top(r[flights], "flights")
    return (tasks.CONVERT_CURRENCY, {"amount": flight["price_usd"], "base": "USD", "target": target(p, r)},
            f"{flight['flight_number']} costs {_n(flight['price_usd'])} USD; I convert that to {target(p, r)}.")
  return call


def _flight_sentence(search: Mapping[str, Any], goal: str, *, price: bool) -> str:
  f = _top(search, "flights")
  cost = f", {_n(f['price_usd'])} USD" if price else ""
  return (f"The {goal} flight from {search['origin']} to {search['destination']} is {f['flight_number']} "
          f"({f['airline']}, departing {f['departure']}, {f['duration_min']} minutes{cost}).")


def _hotel_sentence(search: Mapping[str, Any], min_stars: int) -> str:
  h = _top(search, "hotels")
  return (f"The cheapest hotel in {search['city']} with at least {min_stars} stars is {h['name']} "
          f"({h['stars']} stars, {_n(h['price_per_night'])} {h['currency']} a night, rated {_n(h['rating'])}).")


def _forecast_words(day: Mapping[str, Any]) -> str:
  return (f"{day['condition']}, a high of {_n(day['high_c'])} C, a low of {_n(day['low_c'])} C and "
          f"{_n(day['rain_mm'])} mm of rain")


def _city_words(facts: Mapping[str, Any]) -> str:
  return f"{facts['city']} ({facts['country']}, currency {facts['currency']})"


def _hotel_usd(p: Params, r: Results) -> Call:
  h = _top(r[0], "hotels")
  return (tasks.CONVERT_CURRENCY, {"amount": h["price_per_night"], "base": h["currency"], "target": "USD"},
          f"{h['name']} costs {_n(h['price_per_night'])} {h['currency']} a night; I convert that to USD.")


def _stay_total(p: Params, r: Results) -> Call:
  h = _top(r[0], "hotels")
  return (tasks.CALCULATE, {"expression": f"{h['price_per_night']} * {p['nights']}"},
          f"{h['name']} costs {_n(h['price_per_night'])} {h['currency']} a night; I multiply by "
          f"{p['nights']} nights.")


def _stay_usd(p: Params, r: Results) -> Call:
  currency = _top(r[0], "hotels")["currency"]
  return (tasks.CONVERT_CURRENCY, {"amount": r[1]["result"], "base": currency, "target": "USD"},
          f"The stay costs {_n(r[1]['result'])} {currency}; I convert that to USD.")


def _to_fahrenheit(p: Params, r: Results) -> Call:
  return (tasks.CONVERT_UNITS, {"value": r[0]["high_c"], "from_unit": "C", "to_unit": "F"},
          f"The high is {_n(r[0]['high_c'])} C; I convert it to Fahrenheit.")


def _to_hours(p: Params, r: Results) -> Call:
  f = _top(r[0], "flights")
  return (tasks.CONVERT_UNITS, {"value": f["duration_min"], "from_unit": "min", "to_unit": "h"},
          f"{f['flight_number']} takes {f['duration_min']} minutes; I convert that to hours.")


def _difference(p: Params, r: Results) -> Call:
  return (tasks.CALCULATE, {"expression": f"{r[0]['population']} - {r[1]['population']}"},
          f"{r[0]['city']} has {_n(r[0]['population'])} people and {r[1]['city']} {_n(r[1]['population'])}; "
          f"I subtract.")


def _rain_sum(p: Params, r: Results) -> Call:
  return (tasks.CALCULATE, {"expression": f"{r[0]['rain_mm']} + {r[1]['rain_mm']}"},
          f"{r[0]['day']} brings {_n(r[0]['rain_mm'])} mm and {r[1]['day']} {_n(r[1]['rain_mm'])} mm; I add them.")


def _exchange_rate(p: Params, r: Results) -> Call:
  del r
  return (tasks.EXCHANGE_RATE, {"base": p["base"], "target": p["target"]},
          f"I look up how many {p['target']} one {p['base']} buys.")


PLANS: dict[str, Plan] = {
    "city_population": Plan(
        (_facts("city", "to find its population"),),
        lambda p, r: [f"{_city_words(r[0])} has a population of {_n(r[0]['population'])}."]),
    "daily_weather": Plan(
        (_forecast("day"),),
        lambda p, r: [f"In {r[0]['city']} on {r[0]['day']} the sky will be {r[0]['condition']}.",
                      f"The high will be {_n(r[0]['high_c'])} C and the low {_n(r[0]['low_c'])} C, with "
                      f"{_n(r[0]['rain_mm'])} mm of rain and wind of {_n(r[0]['wind_kmh'])} km/h."]),
    "exchange_rate": Plan(
        (_exchange_rate,),
        lambda p, r: [f"One {r[0]['base']} buys {_n(r[0]['rate'])} {r[0]['target']}."]),
    "cheapest_flight": Plan(
        (_search_flights("price"),),
        lambda p, r: [_flight_sentence(r[0], "cheapest", price=False),
                      f"It costs {_n(_top(r[0], 'flights')['price_usd'])} USD."]),
    "cheapest_flight_in_currency": Plan(
        (_search_flights("price"), _convert_flight_price(0, lambda p, r: p["currency"])),
        lambda p, r: [_flight_sentence(r[0], "cheapest", price=False),
                      f"Its price of {_n(r[1]['amount'])} USD is {_n(r[1]['result'])} {r[1]['target']}."]),
    "high_in_fahrenheit": Plan(
        (_forecast("day"), _to_fahrenheit),
        lambda p, r: [f"In {r[0]['city']} on {r[0]['day']} expect {r[0]['condition']}: a high of "
                      f"{_n(r[0]['high_c'])} C ({_n(r[1]['result'])} F), a low of {_n(r[0]['low_c'])} C and "
                      f"{_n(r[0]['rain_mm'])} mm of rain."]),
    "cheapest_hotel_in_usd": Plan(
        (_search_hotels, _hotel_usd),
        lambda p, r: [_hotel_sentence(r[0], p["min_stars"]),
                      f"At {_n(r[1]['amount'])} {r[1]['base']} a night that is {_n(r[1]['result'])} USD."]),
    "hotel_stay_in_usd": Plan(
        (_search_hotels, _stay_total, _stay_usd),
        lambda p, r: [_hotel_sentence(r[0], p["min_stars"]),
                      f"{p['nights']} nights cost {_n(r[2]['amount'])} {r[2]['base']}, which is "
                      f"{_n(r[2]['result'])} USD."]),
    "flight_in_local_currency": Plan(
        (_facts("destination", "to find its currency"), _search_flights("price"),
         _convert_flight_price(1, lambda p, r: r[0]["currency"])),
        lambda p, r: [_flight_sentence(r[1], "cheapest", price=True),
                      f"In {_city_words(r[0])} that is {_n(r[2]['result'])} {r[2]['target']}."]),
    "population_difference": Plan(
        (_facts("larger", "to find its population"), _facts("smaller", "to find its population"), _difference),
        lambda p, r: [f"{_city_words(r[0])} has {_n(r[0]['population'])} inhabitants and {_city_words(r[1])} "
                      f"has {_n(r[1]['population'])}, so {r[0]['city']} has {_n(r[2]['result'])} more."]),
    "shortest_flight_hours": Plan(
        (_search_flights("duration"), _to_hours),
        lambda p, r: [_flight_sentence(r[0], "shortest", price=True),
                      f"Its {_top(r[0], 'flights')['duration_min']} min are {_n(r[1]['result'])} h."]),
    "rain_total": Plan(
        (_forecast("day1"), _forecast("day2"), _rain_sum),
        lambda p, r: [f"In {r[0]['city']}, {r[0]['day']} brings {_forecast_words(r[0])}; {r[1]['day']} brings "
                      f"{_forecast_words(r[1])}: {_n(r[2]['result'])} mm in total."]),
}


# -- mistakes ---------------------------------------------------------------------------------


def _wrong_value(rng: random.Random, name: str, value: Any, spec: Mapping[str, Any], seen: tasks.EntityPool,
                 args: Mapping[str, Any]) -> Any:
  """A plausible but wrong value for one argument."""
  if name in ("origin", "destination") and {"origin", "destination"} <= set(args):
    return args["destination" if name == "origin" else "origin"]  # the classic swap
  if name in ("city", "origin", "destination"):
    return rng.choice([c for c in seen.cities if c != value])
  if name == "day":
    return rng.choice([d for d in DAYS if d != value])
  if name in ("base", "target"):
    return rng.choice([c for c in seen.currencies if c != value])
  if name == "expression":
    for old, new in ((" + ", " - "), (" - ", " + "), (" * ", " + ")):
      if old in value:
        return value.replace(old, new, 1)
    return value + " + 1"
  if "enum" in spec:
    return rng.choice([option for option in spec["enum"] if option != value])
  if name == "min_stars":
    return rng.choice([s for s in (1, 2, 3, 4, 5) if s != value])
  if isinstance(value, (int, float)):
    return round(value * rng.choice((10, 0.1, 1.5)), 2)  # a slipped decimal, a wrong factor
  return value


def _wrong_arguments(rng: random.Random, name: str, args: Mapping[str, Any], seen: tasks.EntityPool
                     ) -> dict[str, Any]:
  properties = TOOLS[name].spec.parameters["properties"]
  key = rng.choice(sorted(args))
  return {**args, key: _wrong_value(rng, key, args[key], properties.get(key, {}), seen, args)}


def _malformed(rng: random.Random, name: str, args: Mapping[str, Any], thought: str) -> str:
  variant = rng.randrange(4)
  text = react.format_arguments(dict(args))
  if variant == 0:  # the closing brace forgotten
    return react.format_action(name, text[:-1], thought)
  if variant == 1:  # Python-style quotes
    return react.format_action(name, repr(dict(args)), thought)
  if variant == 2 and len(args) > 1:  # a required argument forgotten
    required = TOOLS[name].required
    dropped = rng.choice([k for k in required if k in args] or list(args))
    return react.format_action(name, react.format_arguments(
        {k: v for k, v in args.items() if k != dropped}), thought)
  # the tool's short name instead of the full function name
  return react.format_action(name.split("_for_")[0], text, thought)


def _distractor(rng: random.Random, task: Task, results: Results, seen: tasks.EntityPool,
                tables: Tables) -> str | None:
  names = [n for n in task.tool_names if n != FINISH and n not in task.relevant_tools]
  if not names:
    return None
  name = rng.choice(names)
  cities = [v for v in task.params.values() if isinstance(v, str) and tables.city(v) is not None]
  city = cities[0] if cities else rng.choice(seen.cities)
  flights = [f for r in results if isinstance(r, dict) for f in r.get("flights", ())]
  hotels = [h for r in results if isinstance(r, dict) for h in r.get("hotels", ())]
  fillers = {
      "city": city, "day": rng.choice(DAYS),
      "origin": task.params.get("origin", city), "destination": task.params.get("destination", city),
      "flight_number": (flights[0]["flight_number"] if flights
                        else rng.choice(tables.flights)["flight_number"]),
      "hotel_id": hotels[0]["hotel_id"] if hotels else tables.hotels_in(city)[0]["hotel_id"],
      "base": "USD", "target": task.params.get("currency", "EUR"), "amount": 100,
      "value": 10, "from_unit": "km", "to_unit": "mi", "expression": "100 * 2",
  }
  args = {key: fillers[key] for key in TOOLS[name].required}
  return react.format_action(name, react.format_arguments(args),
                             f"Let me also call {name}; it may help.")


def _finish(answer: str, give_up: bool = False) -> str:
  args = {"return_type": GIVE_UP if give_up else GIVE_ANSWER, "final_answer": answer}
  return react.format_action(FINISH, react.format_arguments(args),
                             "I cannot get what I need, so I give up." if give_up
                             else "I have everything I need for the answer.")


_GIVE_UP_ANSWER = "I could not complete the task with the available functions."
_VAGUE_ANSWER = "I looked into your question with the available functions."


# -- the expert loop --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExpertRun:
  """One expert episode and the mistakes made in it (in order)."""

  episode: env.Episode
  mistakes: tuple[str, ...]


def _succeeded(observation: str) -> tuple[bool, Any]:
  error, response = env.observation_payload(observation)
  return (not error and isinstance(response, dict)), response


def without_thought(action: str) -> str:
  """The action without its leading `Thought: ...` line (the expert's thoughts are one line)."""
  return action.split("\n", 1)[1] if action.startswith("Thought: ") and "\n" in action else action


def run_expert(task: Task, *, mistakes: Mistakes = Mistakes(), seed: int = 0,
               config: env.EnvConfig = env.EnvConfig(), tables: Tables | None = None,
               thoughts: bool = True) -> ExpertRun:
  """Plays one episode of `task`. Deterministic in (`task.task_id`, `seed`, `mistakes`).

  `thoughts=False` writes bare `Action` / `Action Input` actions (shorter episodes for a
  tiny model; the decisions and mistakes are the same)."""
  tables = tables or load_tables()
  seen, _ = tasks.entity_pools(tables)
  rng = random.Random(f"steptool-env-expert:{seed}:{task.task_id}")
  plan = PLANS[task.template]
  episode, _ = env.reset(task, config)
  results: list[Any] = []
  made: list[str] = []
  last_call: str | None = None
  while not episode.done:
    final = len(results) == len(plan.steps)
    kinds = _FINAL_KINDS if final else tuple(k for k in _CALL_KINDS if k != "redundant" or last_call)
    kind = mistakes.draw(rng, kinds)
    planned = False
    try:
      if kind == "give_up":
        action = _finish(_GIVE_UP_ANSWER, give_up=True)
      elif final:
        sentences = plan.answer(task.params, results)
        if kind == "missing_fact":
          sentences.pop(rng.randrange(len(sentences)))
        action = _finish(" ".join(sentences) or _VAGUE_ANSWER)
      else:
        name, args, thought = plan.steps[len(results)](task.params, results)
        planned = kind in (None, "wrong_arguments")
        if kind == "wrong_arguments":
          args = _wrong_arguments(rng, name, args, seen)
        if kind == "distractor":
          action = _distractor(rng, task, results, seen, tables)
          if action is None:
            kind, planned = None, True
        if kind == "redundant":
          action = last_call
        elif kind == "malformed":
          action = _malformed(rng, name, args, thought)
        elif planned:
          action = react.format_action(name, react.format_arguments(args), thought)
    except (KeyError, IndexError, TypeError, ValueError):
      # An earlier wrong call left results the plan cannot use: a real expert gives up.
      kind, planned = "give_up", False
      action = _finish(_GIVE_UP_ANSWER, give_up=True)
    if kind is not None:
      made.append(kind)
    if not thoughts:
      action = without_thought(action)
    episode, result = env.step(episode, action)
    ok, response = _succeeded(result.observation)
    if planned and ok:
      results.append(response)
    if ok and kind != "distractor":
      last_call = action
  return ExpertRun(episode=episode, mistakes=tuple(made))
