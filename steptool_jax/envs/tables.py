"""Read-only access to the environment's bundled data tables (package data JSON).

The files are built by `build_tables.py`; this module only loads them (once) and offers
the lookups the tools need. Entity names are matched case- and accent-insensitively, so
`sao paulo` finds `São Paulo`, as a forgiving web API would.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import unicodedata
from typing import Any, Mapping

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def normalize_name(text: str) -> str:
  """Case-, accent- and whitespace-insensitive key for entity names."""
  decomposed = unicodedata.normalize("NFKD", text)
  stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
  return " ".join(stripped.casefold().split())


@dataclasses.dataclass(frozen=True)
class Tables:
  """All tables, plus indexes by normalised name."""

  cities: tuple[Mapping[str, Any], ...]
  currencies: tuple[Mapping[str, Any], ...]
  weather: Mapping[str, tuple[Mapping[str, Any], ...]]
  flights: tuple[Mapping[str, Any], ...]
  hotels: tuple[Mapping[str, Any], ...]

  @functools.cached_property
  def city_by_key(self) -> dict[str, Mapping[str, Any]]:
    return {normalize_name(row["city"]): row for row in self.cities}

  @functools.cached_property
  def currency_by_code(self) -> dict[str, Mapping[str, Any]]:
    return {row["code"]: row for row in self.currencies}

  @functools.cached_property
  def flight_by_number(self) -> dict[str, Mapping[str, Any]]:
    return {row["flight_number"]: row for row in self.flights}

  @functools.cached_property
  def hotel_by_id(self) -> dict[str, Mapping[str, Any]]:
    return {row["hotel_id"]: row for row in self.hotels}

  @functools.cached_property
  def _flights_by_route(self) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    index: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in self.flights:
      index.setdefault((normalize_name(row["origin"]), normalize_name(row["destination"])), []).append(row)
    return index

  @functools.cached_property
  def _hotels_by_city(self) -> dict[str, list[Mapping[str, Any]]]:
    index: dict[str, list[Mapping[str, Any]]] = {}
    for row in self.hotels:
      index.setdefault(normalize_name(row["city"]), []).append(row)
    return index

  @functools.cached_property
  def routes(self) -> tuple[tuple[str, str], ...]:
    """(origin, destination) pairs with at least one flight, in table order."""
    return tuple(dict.fromkeys((row["origin"], row["destination"]) for row in self.flights))

  def city(self, name: str) -> Mapping[str, Any] | None:
    return self.city_by_key.get(normalize_name(name))

  def flights_between(self, origin: str, destination: str) -> list[Mapping[str, Any]]:
    return list(self._flights_by_route.get((normalize_name(origin), normalize_name(destination)), ()))

  def hotels_in(self, city: str) -> list[Mapping[str, Any]]:
    return list(self._hotels_by_city.get(normalize_name(city), ()))

  def forecast(self, city: str) -> tuple[Mapping[str, Any], ...] | None:
    row = self.city(city)
    return None if row is None else self.weather[row["city"]]


def _read(name: str) -> Any:
  text = importlib.resources.files("steptool_jax.envs").joinpath("tables", f"{name}.json").read_text(
      encoding="utf-8")
  return json.loads(text)


@functools.lru_cache(maxsize=1)
def load_tables() -> Tables:
  """The bundled tables (loaded once per process)."""
  return Tables(
      cities=tuple(_read("cities")),
      currencies=tuple(_read("currencies")),
      weather={city: tuple(days) for city, days in _read("weather").items()},
      flights=tuple(_read("flights")),
      hotels=tuple(_read("hotels")),
  )
