"""Typed sections <-> ConfigDict: strict types, unknown fields named by their dotted path with a
suggestion at the same depth, nested errors prefixed, `replace` reaching into sub-sections, and
round trips (ConfigDict, JSON) that give back the dataclass."""

from __future__ import annotations

import dataclasses
import json
import math
import typing

import ml_collections
import pytest

from steptool_jax.config import schema
from steptool_jax.config.run import RunConfig, base_config
from steptool_jax.config.schema import ConfigError


@dataclasses.dataclass(frozen=True)
class Inner:
  count: int = 1
  ratio: float = 0.5

  def __post_init__(self):
    schema.number("ratio", self.ratio, low=0.0, high=1.0)


@dataclasses.dataclass(frozen=True)
class Middle:
  inner: Inner = Inner()
  label: str = "m"


@dataclasses.dataclass(frozen=True)
class Outer:
  name: str = "a"
  flag: bool = False
  names: tuple[str, ...] = ("p",)
  sizes: dict[str, int] = dataclasses.field(default_factory=lambda: {"x": 1})
  middle: Middle = Middle()


@dataclasses.dataclass(frozen=True)
class WithUnion:
  maybe: int | None = None


def _error(cls, values) -> ConfigError:
  with pytest.raises(ConfigError) as info:
    schema.from_config_dict(cls, values)
  return info.value


# --- unknown fields ---------------------------------------------------------------------------------


def test_unknown_top_level_field_is_named_with_a_suggestion():
  error = _error(Outer, {"nmae": "b"})
  assert str(error) == "nmae: unknown config field; did you mean 'name'?"
  assert (error.field, error.suggestion) == ("nmae", "name")


def test_unknown_nested_field_has_a_dotted_path_and_a_dotted_suggestion():
  error = _error(Outer, {"middle": {"inner": {"cuont": 3}}})
  assert str(error) == "middle.inner.cuont: unknown config field; did you mean 'middle.inner.count'?"
  assert (error.field, error.suggestion) == ("middle.inner.cuont", "middle.inner.count")


def test_unknown_field_without_a_close_name_has_no_suggestion():
  error = _error(Outer, {"middle": {"zzzzzzzz": 3}})
  assert str(error) == "middle.zzzzzzzz: unknown config field" and error.suggestion == ""


def test_unknown_field_of_the_run_config():
  error = _error(RunConfig, {"model": {"lora": {"rnak": 4}}})
  assert str(error) == "model.lora.rnak: unknown config field; did you mean 'model.lora.rank'?"


# --- types --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values, message", [
    ({"flag": 1}, "flag: expected True or False, found 1"),
    ({"flag": "yes"}, "flag: expected True or False, found 'yes'"),
    ({"middle": {"inner": {"count": True}}}, "middle.inner.count: expected an integer, found True"),
    ({"middle": {"inner": {"count": 2.0}}}, "middle.inner.count: expected an integer, found 2.0"),
    ({"middle": {"inner": {"ratio": False}}}, "middle.inner.ratio: expected a number, found False"),
    ({"middle": {"inner": {"ratio": "0.5"}}}, "middle.inner.ratio: expected a number, found '0.5'"),
    ({"name": 3}, "name: expected a string, found 3"),
    ({"names": "p"}, "names: expected a tuple, found 'p'"),  # a string is not a tuple of its letters
    ({"names": ["p", 3]}, "names[1]: expected a string, found 3"),
    ({"sizes": [1, 2]}, "sizes: expected a mapping, found [1, 2]"),
    ({"sizes": {"x": "2"}}, "sizes.x: expected an integer, found '2'"),
    ({"middle": 3}, "middle: expected a section (a mapping of fields), found 3"),
])
def test_values_of_the_wrong_type_name_their_field(values, message):
  assert str(_error(Outer, values)) == message


def test_ints_are_accepted_as_floats_and_become_floats():
  parsed = schema.from_config_dict(Outer, {"middle": {"inner": {"ratio": 1}}})
  assert parsed.middle.inner.ratio == 1.0 and type(parsed.middle.inner.ratio) is float


def test_lists_become_tuples_and_mappings_dicts():
  parsed = schema.from_config_dict(Outer, {"names": ["p", "q"], "sizes": ml_collections.ConfigDict({"y": 2})})
  assert parsed.names == ("p", "q") and type(parsed.names) is tuple
  assert parsed.sizes == {"y": 2} and type(parsed.sizes) is dict


def test_missing_fields_keep_their_defaults():
  assert schema.from_config_dict(Outer, {}) == Outer()
  assert schema.from_config_dict(Outer, {"middle": {"label": "z"}}) == Outer(middle=Middle(label="z"))


def test_a_failed_section_check_is_prefixed_with_the_section_path():
  assert str(_error(Outer, {"middle": {"inner": {"ratio": 1.5}}})) == (
      "middle.inner.ratio: expected a number in [0, 1], found 1.5")
  assert str(_error(RunConfig, {"model": {"lora": {"rank": 0}}})) == (
      "model.lora.rank: expected a positive number, found 0")


def test_unions_are_not_config_types():
  with pytest.raises(TypeError, match="maybe: unions are not config types"):
    schema.from_config_dict(WithUnion, {"maybe": 1})


def test_field_references_of_a_config_dict_are_resolved():
  config = ml_collections.ConfigDict({"name": "a", "middle": {"label": "b"}})
  config.middle.label = config.get_ref("name")
  assert schema.from_config_dict(Outer, config).middle.label == "a"


# --- the checks sections use ------------------------------------------------------------------------


@pytest.mark.parametrize("value, bounds, ok", [
    (0.0, dict(low=0.0), True),
    (0.0, dict(low=0.0, low_open=True), False),
    (1.0, dict(high=1.0), True),
    (1.0, dict(high=1.0, high_open=True), False),
    (-1e9, dict(high=1.0), True),
    (1.0000001, dict(low=0.0, high=1.0), False),
    (math.nan, {}, False),
    (math.inf, {}, False),
    (True, {}, False),
    ("1", {}, False),
])
def test_number_bounds(value, bounds, ok):
  if ok:
    schema.number("x", value, **bounds)
  else:
    with pytest.raises(ConfigError, match=r"^x: expected a (finite )?number"):
      schema.number("x", value, **bounds)


def test_number_names_the_interval():
  with pytest.raises(ConfigError) as info:
    schema.number("top_p", 0.0, low=0.0, high=1.0, low_open=True)
  assert str(info.value) == "top_p: expected a number in (0, 1], found 0.0"


@pytest.mark.parametrize("value, allow_zero, ok", [
    (1, False, True), (1e-9, False, True), (0, False, False), (0, True, True), (-1, True, False),
    (math.nan, True, False), (math.inf, False, False), (True, False, False)])
def test_positive(value, allow_zero, ok):
  if ok:
    schema.positive("n", value, allow_zero=allow_zero)
  else:
    with pytest.raises(ConfigError) as info:
      schema.positive("n", value, allow_zero=allow_zero)
    assert str(info.value) == (f"n: expected a {'non-negative' if allow_zero else 'positive'} number,"
                               f" found {value!r}")


def test_one_of():
  schema.one_of("kind", "b", ("a", "b"))
  with pytest.raises(ConfigError) as info:
    schema.one_of("kind", "c", ("a", "b"))
  assert str(info.value) == "kind: expected one of ('a', 'b'), found 'c'"


def test_within_prefixes_field_and_suggestion():
  error = ConfigError("x", "unknown config field", suggestion="y").within("sec")
  assert (str(error), error.field, error.message, error.suggestion) == (
      "sec.x: unknown config field; did you mean 'sec.y'?", "sec.x", "unknown config field", "sec.y")
  assert str(ConfigError("", "bad").within("sec")) == "sec: bad"


# --- replace ----------------------------------------------------------------------------------------


def _flat(plain, prefix=""):
  out = {}
  for key, value in plain.items():
    if isinstance(value, dict) and key != "mesh":
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def _differences(a, b) -> set[str]:
  flat_a, flat_b = _flat(schema.to_plain(a)), _flat(schema.to_plain(b))
  assert flat_a.keys() == flat_b.keys()
  return {key for key in flat_a if flat_a[key] != flat_b[key]}


def test_replace_changes_exactly_the_named_fields():
  run = RunConfig()
  assert _differences(run, schema.replace(run, ppo__vf_coef=0.0)) == {"ppo.vf_coef"}
  changed = schema.replace(run, seed=5, model__lora__rank=4, model__lora__enabled=True, ppo__epochs=2)
  assert _differences(run, changed) == {"seed", "model.lora.rank", "model.lora.enabled", "ppo.epochs"}
  assert (changed.seed, changed.model.lora.rank, changed.model.lora.enabled, changed.ppo.epochs) == (5, 4, True, 2)
  assert run == RunConfig()  # the original is untouched


def test_replace_runs_the_section_checks():
  with pytest.raises(ConfigError, match=r"^gamma: expected a number in \[0, 1\], found 2.0"):
    schema.replace(RunConfig(), ppo__gamma=2.0)


# --- round trips ------------------------------------------------------------------------------------


def _section_classes(cls):
  yield cls
  for tp in typing.get_type_hints(cls).values():
    if schema.is_section(tp):
      yield from _section_classes(tp)


@pytest.mark.parametrize("cls", sorted(set(_section_classes(RunConfig)), key=lambda c: c.__name__),
                         ids=lambda c: c.__name__)
def test_every_section_default_is_valid_and_round_trips(cls):
  default = cls()
  assert schema.from_config_dict(cls, schema.to_config_dict(default)) == default


def test_base_config_parses_to_the_defaults():
  assert schema.from_config_dict(RunConfig, base_config()) == RunConfig()


def test_a_changed_config_round_trips_through_config_dict_and_json():
  run = schema.replace(RunConfig(), seed=3, mesh={"data": 2, "fsdp": 1, "tensor": -1}, model__lora__enabled=True,
                       model__lora__targets=("q_proj", "v_proj"), env__num_tasks=17, optim__learning_rate=3e-4)
  assert schema.from_config_dict(RunConfig, schema.to_config_dict(run)) == run
  as_json = json.loads(json.dumps(schema.to_plain(run)))  # tuples -> lists
  assert as_json["model"]["lora"]["targets"] == ["q_proj", "v_proj"]
  assert schema.from_config_dict(RunConfig, as_json) == run


def test_config_dict_overrides_like_the_command_line():
  config = base_config()
  config.ppo.vf_coef = 0.0
  config.model.lora.targets = ("q_proj",)
  run = schema.from_config_dict(RunConfig, config)
  assert run.ppo.vf_coef == 0.0 and run.model.lora.targets == ("q_proj",)
  with pytest.raises(TypeError):  # the generated ConfigDict is typed: a string into a float field fails at once
    config.ppo.vf_coef = "zero"


def test_to_plain_and_flat_fields():
  assert schema.to_plain(Outer()) == {"name": "a", "flag": False, "names": ("p",), "sizes": {"x": 1},
                                      "middle": {"inner": {"count": 1, "ratio": 0.5}, "label": "m"}}
  assert schema.flat_fields(Outer) == ["name", "flag", "names", "sizes", "middle.inner.count", "middle.inner.ratio",
                                       "middle.label"]
  assert "ppo.vf_coef" in schema.flat_fields(RunConfig) and "mesh" in schema.flat_fields(RunConfig)
  assert set(schema.flat_fields(RunConfig)) == set(_flat(base_config().to_dict()))
