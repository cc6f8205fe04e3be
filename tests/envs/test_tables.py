"""The bundled tables: what the builder makes is what is committed, and they are complete."""

import json

from steptool_jax.envs import build_tables
from steptool_jax.envs.tables import DAYS, load_tables, normalize_name


def test_committed_tables_are_what_the_builder_makes():
  built = build_tables.build_tables()
  for stem, table in built.items():
    committed = (build_tables.TABLES_DIR / f"{stem}.json").read_text(encoding="utf-8")
    assert committed == build_tables.dump_table(table), f"{stem}.json is stale: run build-tables"
    assert json.loads(committed) == table


def test_every_city_has_a_week_of_weather_hotels_and_flights_both_ways():
  tables = load_tables()
  for row in tables.cities:
    city = row["city"]
    assert [day["day"] for day in tables.weather[city]] == list(DAYS)
    assert len(tables.hotels_in(city)) == 5
    assert any(origin == city for origin, _ in tables.routes)
    assert any(destination == city for _, destination in tables.routes)
    assert row["currency"] in tables.currency_by_code


def test_held_out_cities_and_unique_keys():
  tables = load_tables()
  held_out = {row["city"] for row in tables.cities if row["held_out"]}
  assert held_out == {"Lisbon", "Vienna", "Cape Town", "Istanbul", "Bangkok", "Melbourne"}
  assert len(tables.flight_by_number) == len(tables.flights)
  assert len(tables.hotel_by_id) == len(tables.hotels)
  assert len(tables.city_by_key) == len(tables.cities)


def test_names_match_case_and_accent_insensitively():
  tables = load_tables()
  assert normalize_name("  SAO   paulo ") == "sao paulo"
  assert tables.city("são paulo")["city"] == "São Paulo"
  assert tables.city("Sao Paulo")["currency"] == "BRL"
  assert tables.city("Atlantis") is None
