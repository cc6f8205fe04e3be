"""The environment's executable tools, their OpenAI function schemas, and `Finish`.

Each tool is a deterministic function over the bundled tables. Names follow ToolBench's
`<api>_for_<tool>` style; answers use ToolBench's envelope `{"error": "", "response": ...}`.

Outcomes, chosen so the rule annotator (`steptool_jax.rewards.rules.succ_calling`) reads
them the way a human judge would:
- missing, unexpected or ill-typed arguments: a non-empty `error` (a failed call);
- a well-formed request for an entity the tables do not know (a city, a route, a flight
  number): `error` empty and a `response` string starting with "Please check ..." that says
  what was not found (ToolBench APIs answer unknown entities this way; the rule counts it as
  a failed call);
- otherwise a JSON object with the data.
`call_tool` never raises: any argument, however odd, gives an envelope.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Mapping

from steptool_jax.data.records import FINISH, GIVE_ANSWER, GIVE_UP, ToolSpec
from steptool_jax.envs import calculator, units
from steptool_jax.envs.tables import DAYS, Tables, load_tables


MAX_NUMBER = 1e12


class ArgumentError(ValueError):
  """The call's arguments do not satisfy the schema (-> the envelope's `error`)."""


class NotFound(LookupError):
  """The arguments are well formed but name something the tables do not have."""


@dataclasses.dataclass(frozen=True)
class Tool:
  """One callable API: its schema and its implementation over the tables."""

  spec: ToolSpec
  run: Callable[[Tables, Mapping[str, Any]], Any]

  @property
  def name(self) -> str:
    return self.spec.name

  @property
  def required(self) -> tuple[str, ...]:
    return tuple(self.spec.parameters.get("required", ()))


def _string(description: str, **extra: Any) -> dict[str, Any]:
  return {"type": "string", "description": description, **extra}


def _number(description: str, **extra: Any) -> dict[str, Any]:
  return {"type": "number", "description": description, **extra}


def _spec(name: str, description: str, properties: Mapping[str, Any], required: tuple[str, ...]
          ) -> ToolSpec:
  return ToolSpec(name=name, description=description, parameters={
      "type": "object", "properties": dict(properties), "required": list(required)})


def envelope(response: Any = "", error: str = "") -> str:
  """The ToolBench observation text."""
  return json.dumps({"error": error, "response": response}, ensure_ascii=False)


# -- implementations --------------------------------------------------------------------------


def _city(tables: Tables, name: str) -> Mapping[str, Any]:
  row = tables.city(name)
  if row is None:
    raise NotFound(f"Please check the city name: no city called {name!r} was found.")
  return row


def _currency(tables: Tables, code: str) -> Mapping[str, Any]:
  row = tables.currency_by_code.get(code.strip().upper())
  if row is None:
    raise NotFound(f"Please check the currency code: {code!r} is not supported.")
  return row


def exchange_rate(tables: Tables, base: str, target: str) -> float:
  """Units of `target` per unit of `base`, to 6 decimals (what the API quotes)."""
  return round(_currency(tables, target)["per_usd"] / _currency(tables, base)["per_usd"], 6)


def convert_money(tables: Tables, amount: float, base: str, target: str) -> float:
  """`amount` of `base` in `target`, at the quoted rate, to cents."""
  return round(amount * exchange_rate(tables, base, target), 2)


_CITY_FACT_KEYS = ("city", "country", "currency", "population", "elevation_m")


def _city_facts(tables: Tables, args: Mapping[str, Any]) -> Any:
  row = _city(tables, args["city"])
  return {key: row[key] for key in _CITY_FACT_KEYS}


def _daily_forecast(tables: Tables, args: Mapping[str, Any]) -> Any:
  city = _city(tables, args["city"])["city"]
  forecast = next(row for row in tables.weather[city] if row["day"] == args["day"])
  return {"city": city, **forecast}


def _weekly_forecast(tables: Tables, args: Mapping[str, Any]) -> Any:
  city = _city(tables, args["city"])["city"]
  return {"city": city, "days": [
      {"day": row["day"], "condition": row["condition"], "high_c": row["high_c"], "low_c": row["low_c"]}
      for row in tables.weather[city]]}


_FLIGHT_SORT = {"departure": lambda f: f["departure"], "price": lambda f: f["price_usd"],
                "duration": lambda f: f["duration_min"]}
_HOTEL_SORT = {"rating": lambda h: -h["rating"], "price": lambda h: h["price_per_night"],
               "stars": lambda h: -h["stars"]}


def _choice(args: Mapping[str, Any], key: str, options: Mapping[str, Any], default: str) -> str:
  value = args.get(key, default)
  if value not in options:
    raise ArgumentError(f"{key} must be one of {', '.join(options)}; got {value!r}")
  return value


def _limit(args: Mapping[str, Any]) -> int:
  limit = args.get("limit", 5)
  if limit != int(limit) or not 1 <= limit <= 10:
    raise ArgumentError(f"limit must be a whole number from 1 to 10; got {limit!r}")
  return int(limit)


def _search_flights(tables: Tables, args: Mapping[str, Any]) -> Any:
  sort_by = _choice(args, "sort_by", _FLIGHT_SORT, "departure")
  limit = _limit(args)
  origin = _city(tables, args["origin"])["city"]
  destination = _city(tables, args["destination"])["city"]
  flights = tables.flights_between(origin, destination)
  if not flights:
    raise NotFound(f"Please check the route: there are no flights from {origin} to {destination}.")
  flights = sorted(flights, key=_FLIGHT_SORT[sort_by])[:limit]
  return {"origin": origin, "destination": destination, "flights": [
      {"flight_number": f["flight_number"], "airline": f["airline"], "departure": f["departure"],
       "duration_min": f["duration_min"], "price_usd": f["price_usd"]} for f in flights]}


def _flight_details(tables: Tables, args: Mapping[str, Any]) -> Any:
  number = args["flight_number"].strip().upper()
  row = tables.flight_by_number.get(number)
  if row is None:
    raise NotFound(f"Please check the flight number: {args['flight_number']!r} was not found.")
  return dict(row)


def _search_hotels(tables: Tables, args: Mapping[str, Any]) -> Any:
  sort_by = _choice(args, "sort_by", _HOTEL_SORT, "rating")
  limit = _limit(args)
  min_stars = args.get("min_stars", 1)
  if not 1 <= min_stars <= 5:
    raise ArgumentError(f"min_stars must be between 1 and 5; got {min_stars!r}")
  city = _city(tables, args["city"])["city"]
  hotels = [h for h in tables.hotels_in(city) if h["stars"] >= min_stars]
  if not hotels:
    raise NotFound(f"Please check the filters: no hotel in {city} has {min_stars:g} stars or more.")
  hotels = sorted(hotels, key=_HOTEL_SORT[sort_by])[:limit]
  return {"city": city, "hotels": [
      {"hotel_id": h["hotel_id"], "name": h["name"], "stars": h["stars"],
       "price_per_night": h["price_per_night"], "currency": h["currency"], "rating": h["rating"]}
      for h in hotels]}


def _hotel_details(tables: Tables, args: Mapping[str, Any]) -> Any:
  row = tables.hotel_by_id.get(args["hotel_id"].strip().upper())
  if row is None:
    raise NotFound(f"Please check the hotel id: {args['hotel_id']!r} was not found.")
  return dict(row)


def _exchange_rate(tables: Tables, args: Mapping[str, Any]) -> Any:
  base, target = _currency(tables, args["base"])["code"], _currency(tables, args["target"])["code"]
  return {"base": base, "target": target, "rate": exchange_rate(tables, base, target)}


def _convert_currency(tables: Tables, args: Mapping[str, Any]) -> Any:
  base, target = _currency(tables, args["base"])["code"], _currency(tables, args["target"])["code"]
  amount = args["amount"]
  if amount < 0:
    raise ArgumentError(f"amount must not be negative; got {amount!r}")
  return {"amount": amount, "base": base, "target": target, "rate": exchange_rate(tables, base, target),
          "result": convert_money(tables, amount, base, target)}


def _convert_units(tables: Tables, args: Mapping[str, Any]) -> Any:
  del tables
  try:
    result = units.convert_units(args["value"], args["from_unit"], args["to_unit"])
  except units.UnitError as e:
    raise ArgumentError(str(e)) from None
  return {"value": args["value"], "from_unit": args["from_unit"], "to_unit": args["to_unit"],
          "result": result}


def _calculate(tables: Tables, args: Mapping[str, Any]) -> Any:
  del tables
  try:
    return {"expression": args["expression"], "result": calculator.calculate(args["expression"])}
  except calculator.CalculatorError as e:
    raise ArgumentError(str(e)) from None


# -- the registry ---------------------------------------------------------------------------

_CITY = _string("City name, e.g. Paris")

TOOLS: dict[str, Tool] = {tool.name: tool for tool in (
    Tool(_spec("get_city_facts_for_city_info",
               "Basic facts about a city: country, currency code, population and elevation.",
               {"city": _CITY}, ("city",)), _city_facts),
    Tool(_spec("get_daily_forecast_for_weather",
               "The weather forecast of one day of this week in a city: sky condition, high and low "
               "temperature in degrees Celsius, rain in mm, wind in km/h.",
               {"city": _CITY, "day": _string("Day of the week", enum=list(DAYS))},
               ("city", "day")), _daily_forecast),
    Tool(_spec("get_weekly_forecast_for_weather",
               "Sky condition and high/low temperature (Celsius) for every day of this week in a city.",
               {"city": _CITY}, ("city",)), _weekly_forecast),
    Tool(_spec("search_flights_for_flight_search",
               "Direct flights from one city to another with flight number, airline, departure time, "
               "duration in minutes and price in US dollars.",
               {"origin": _CITY, "destination": _CITY,
                "sort_by": _string("Order of the results (default departure)",
                                   enum=list(_FLIGHT_SORT)),
                "limit": _number("How many flights to return at most (1-10, default 5)")},
               ("origin", "destination")), _search_flights),
    Tool(_spec("get_flight_details_for_flight_search",
               "All details of one flight given its flight number.",
               {"flight_number": _string("Flight number, e.g. AF407")}, ("flight_number",)),
         _flight_details),
    Tool(_spec("search_hotels_for_hotel_finder",
               "Hotels in a city with stars, nightly price in the local currency and guest rating.",
               {"city": _CITY, "min_stars": _number("Minimum number of stars (1-5, default 1)"),
                "sort_by": _string("Order of the results (default rating)", enum=list(_HOTEL_SORT)),
                "limit": _number("How many hotels to return at most (1-10, default 5)")},
               ("city",)), _search_hotels),
    Tool(_spec("get_hotel_details_for_hotel_finder",
               "All details of one hotel given its hotel id.",
               {"hotel_id": _string("Hotel id, e.g. PAR-01")}, ("hotel_id",)), _hotel_details),
    Tool(_spec("get_exchange_rate_for_currency_exchange",
               "How many units of the target currency one unit of the base currency buys.",
               {"base": _string("ISO currency code, e.g. USD"), "target": _string("ISO currency code")},
               ("base", "target")), _exchange_rate),
    Tool(_spec("convert_currency_for_currency_exchange",
               "Converts an amount of money from the base currency into the target currency.",
               {"amount": _number("Amount in the base currency"),
                "base": _string("ISO currency code, e.g. USD"), "target": _string("ISO currency code")},
               ("amount", "base", "target")), _convert_currency),
    Tool(_spec("convert_units_for_unit_converter",
               "Converts a value between units of length, mass, time, volume, speed or temperature "
               "(C, F, K).",
               {"value": _number("The value to convert"),
                "from_unit": _string("Unit of the value", enum=list(units.UNITS)),
                "to_unit": _string("Unit to convert to", enum=list(units.UNITS))},
               ("value", "from_unit", "to_unit")), _convert_units),
    Tool(_spec("calculate_for_calculator",
               "Evaluates an arithmetic expression with + - * / // % **, parentheses and abs, round, "
               "min, max.",
               {"expression": _string("The expression, e.g. (120.5 + 80) * 3")}, ("expression",)),
         _calculate),
)}

FINISH_SPEC = ToolSpec(
    name=FINISH,
    description="Ends the episode. Use return_type give_answer with the complete final answer for the "
                "user, or give_up_and_restart when the task cannot be solved with the calls so far.",
    parameters={
        "type": "object",
        "properties": {
            "return_type": {"type": "string", "enum": [GIVE_ANSWER, GIVE_UP]},
            "final_answer": _string("The answer shown to the user (required with give_answer)"),
        },
        "required": ["return_type"],
    })


def _type_error(name: str, schema: Mapping[str, Any], value: Any) -> str | None:
  kind = schema.get("type")
  if kind == "string":
    if not isinstance(value, str):
      return f"argument {name!r} must be a string; got {type(value).__name__}"
    if not value.strip():
      return f"argument {name!r} must not be empty"
  elif kind == "number":
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      return f"argument {name!r} must be a number; got {type(value).__name__}"
    if not abs(value) <= MAX_NUMBER:  # also rejects NaN
      return f"argument {name!r} must be a finite number of magnitude at most {MAX_NUMBER:g}"
  if "enum" in schema and value not in schema["enum"]:
    return f"argument {name!r} must be one of {', '.join(map(str, schema['enum']))}; got {value!r}"
  return None


def validate_arguments(spec: ToolSpec, arguments: Any) -> str | None:
  """The first schema violation of `arguments`, or None if they are valid."""
  if not isinstance(arguments, dict):
    return f"arguments must be a JSON object; got {type(arguments).__name__}"
  properties = spec.parameters.get("properties", {})
  for name in spec.parameters.get("required", ()):
    if name not in arguments:
      return f"missing required argument {name!r}"
  for name, value in arguments.items():
    if name not in properties:
      return f"unexpected argument {name!r}; expected {', '.join(properties)}"
    problem = _type_error(name, properties[name], value)
    if problem:
      return problem
  return None


def call_tool(name: str, arguments: Any, *, tables: Tables | None = None) -> str:
  """Runs tool `name` on already-parsed JSON `arguments`; returns the envelope text. Never raises."""
  tool = TOOLS.get(name)
  if tool is None:
    return envelope(error=f"no such function: {name!r}")
  problem = validate_arguments(tool.spec, arguments)
  if problem:
    return envelope(error=problem)
  try:
    return envelope(response=tool.run(tables or load_tables(), arguments))
  except ArgumentError as e:
    return envelope(error=str(e))
  except NotFound as e:
    return envelope(response=str(e))
