"""Tool outputs against values checked by hand in the tables, and the error envelopes."""

import json

import pytest
from hypothesis import given, settings, strategies as st

from steptool_jax.envs.tools import FINISH_SPEC, TOOLS, call_tool, validate_arguments


def _call(name, **args):
  envelope = json.loads(call_tool(name, args))
  assert set(envelope) == {"error", "response"}
  return envelope["error"], envelope["response"]


def test_names_follow_toolbench_style_and_schemas_are_openai_functions():
  for name, tool in TOOLS.items():
    assert "_for_" in name
    schema = tool.spec.to_openai()
    assert schema["type"] == "function" and schema["function"]["name"] == name
    params = schema["function"]["parameters"]
    assert params["type"] == "object" and set(params["required"]) <= set(params["properties"])
  assert FINISH_SPEC.parameters["properties"]["return_type"]["enum"] == ["give_answer", "give_up_and_restart"]


def test_city_facts():
  error, response = _call("get_city_facts_for_city_info", city="paris")
  assert error == ""
  assert response == {"city": "Paris", "country": "France", "currency": "EUR", "population": 2102650,
                      "elevation_m": 35}


def test_daily_forecast():
  error, response = _call("get_daily_forecast_for_weather", city="Paris", day="Monday")
  assert error == ""
  assert response == {"city": "Paris", "day": "Monday", "condition": "showers", "high_c": 21, "low_c": 13,
                      "rain_mm": 8.3, "wind_kmh": 6}


def test_flight_search_sorts_and_limits():
  # Paris -> Berlin in flights.json: LH3452 15:00 119 min 139.94; AF3139 08:40 102 min 234.76;
  # LH1030 21:10 130 min 197.23.
  numbers = lambda response: [f["flight_number"] for f in response["flights"]]
  _, by_departure = _call("search_flights_for_flight_search", origin="Paris", destination="Berlin")
  assert numbers(by_departure) == ["AF3139", "LH3452", "LH1030"]
  _, by_price = _call("search_flights_for_flight_search", origin="Paris", destination="Berlin", sort_by="price")
  assert numbers(by_price) == ["LH3452", "LH1030", "AF3139"]
  assert by_price["flights"][0] == {"flight_number": "LH3452", "airline": "Lufthansa", "departure": "15:00",
                                    "duration_min": 119, "price_usd": 139.94}
  _, top = _call("search_flights_for_flight_search", origin="Paris", destination="Berlin",
                 sort_by="duration", limit=1)
  assert numbers(top) == ["AF3139"]


def test_hotel_search_filters_sorts_and_limits():
  # Paris hotels: PAR-01 3* 164.81 r7.5, PAR-02 3* 132.55 r8.0, PAR-03 3* 123.82 r6.0,
  # PAR-04 4* 158.09 r8.7, PAR-05 2* 120.48 r8.1 (all EUR).
  ids = lambda response: [h["hotel_id"] for h in response["hotels"]]
  _, by_rating = _call("search_hotels_for_hotel_finder", city="Paris")
  assert ids(by_rating) == ["PAR-04", "PAR-05", "PAR-02", "PAR-01", "PAR-03"]
  _, cheap = _call("search_hotels_for_hotel_finder", city="Paris", min_stars=3, sort_by="price")
  assert ids(cheap) == ["PAR-03", "PAR-02", "PAR-04", "PAR-01"]
  assert cheap["hotels"][0]["name"] == "Royal Palace Paris" and cheap["hotels"][0]["currency"] == "EUR"
  _, four = _call("search_hotels_for_hotel_finder", city="Paris", min_stars=4, limit=1)
  assert ids(four) == ["PAR-04"]


def test_currency():
  # 1 EUR = 151.0 / 0.92 JPY = 164.1304347... -> quoted to 6 decimals.
  error, rate = _call("get_exchange_rate_for_currency_exchange", base="EUR", target="JPY")
  assert error == "" and rate == {"base": "EUR", "target": "JPY", "rate": 164.130435}
  # 139.94 USD * 0.92 = 128.7448 -> 128.74 EUR.
  _, converted = _call("convert_currency_for_currency_exchange", amount=139.94, base="usd", target="EUR")
  assert converted == {"amount": 139.94, "base": "USD", "target": "EUR", "rate": 0.92, "result": 128.74}
  # 371.46 EUR at 1/0.92 = 1.086957 USD/EUR -> 403.76105 -> 403.76 USD.
  _, back = _call("convert_currency_for_currency_exchange", amount=371.46, base="EUR", target="USD")
  assert back["rate"] == 1.086957 and back["result"] == 403.76


def test_units_and_calculator():
  assert _call("convert_units_for_unit_converter", value=21, from_unit="C", to_unit="F")[1]["result"] == 69.8
  assert _call("calculate_for_calculator", expression="123.82 * 3")[1] == {"expression": "123.82 * 3",
                                                                            "result": 371.46}


@pytest.mark.parametrize("name, args, message", [
    ("get_city_facts_for_city_info", {}, "missing required argument 'city'"),
    ("get_city_facts_for_city_info", {"city": 3}, "must be a string"),
    ("get_city_facts_for_city_info", {"city": " "}, "must not be empty"),
    ("get_city_facts_for_city_info", {"city": "Paris", "country": "France"}, "unexpected argument 'country'"),
    ("get_daily_forecast_for_weather", {"city": "Paris", "day": "someday"}, "must be one of Monday"),
    ("search_flights_for_flight_search", {"origin": "Paris", "destination": "Berlin", "limit": 0}, "limit"),
    ("search_flights_for_flight_search", {"origin": "Paris", "destination": "Berlin", "sort_by": "fun"},
     "sort_by"),
    ("search_hotels_for_hotel_finder", {"city": "Paris", "min_stars": 9}, "min_stars"),
    ("convert_currency_for_currency_exchange", {"amount": "12", "base": "USD", "target": "EUR"},
     "must be a number"),
    ("convert_currency_for_currency_exchange", {"amount": True, "base": "USD", "target": "EUR"},
     "must be a number"),
    ("convert_currency_for_currency_exchange", {"amount": -1, "base": "USD", "target": "EUR"}, "negative"),
    ("convert_currency_for_currency_exchange", {"amount": float("nan"), "base": "USD", "target": "EUR"},
     "finite"),
    ("convert_units_for_unit_converter", {"value": 1e300, "from_unit": "km", "to_unit": "mi"}, "finite"),
    ("convert_units_for_unit_converter", {"value": 1, "from_unit": "km", "to_unit": "kg"}, "cannot convert"),
    ("calculate_for_calculator", {"expression": "__import__('os')"}, "unsupported"),
    ("no_such_tool", {}, "no such function"),
])
def test_bad_arguments_give_an_error_envelope(name, args, message):
  envelope = json.loads(call_tool(name, args))
  assert message in envelope["error"] and envelope["response"] == ""


@pytest.mark.parametrize("name, args, what", [
    ("get_city_facts_for_city_info", {"city": "Atlantis"}, "Atlantis"),
    ("search_flights_for_flight_search", {"origin": "Paris", "destination": "Seoul"}, "no flights"),
    ("get_flight_details_for_flight_search", {"flight_number": "ZZ1"}, "ZZ1"),
    ("get_hotel_details_for_hotel_finder", {"hotel_id": "NOPE-1"}, "NOPE-1"),
    ("convert_currency_for_currency_exchange", {"amount": 1, "base": "USD", "target": "XYZ"}, "XYZ"),
])
def test_unknown_entities_give_a_not_found_response(name, args, what):
  envelope = json.loads(call_tool(name, args))
  assert envelope["error"] == ""
  assert envelope["response"].startswith("Please check") and what in envelope["response"]


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                   max_size=3),
                     max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(TOOLS)), st.dictionaries(
    st.sampled_from(["city", "day", "origin", "destination", "sort_by", "limit", "min_stars", "amount",
                     "base", "target", "value", "from_unit", "to_unit", "expression", "flight_number",
                     "hotel_id", "x"]), _JSON, max_size=4) | _JSON)
def test_any_arguments_give_an_envelope_and_never_raise(name, args):
  text = call_tool(name, args)
  envelope = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in {text}"))
  assert set(envelope) == {"error", "response"}
  problem = validate_arguments(TOOLS[name].spec, args)
  if problem is not None:
    assert envelope["error"] == problem and envelope["response"] == ""
