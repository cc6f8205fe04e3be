"""The evaluation config's own sections: seeds and rates are checked at start, naming the field."""

from __future__ import annotations

import pytest

from steptool_jax.config.evaluation import evaluation_defaults, parse_eval_config


@pytest.mark.parametrize("field, value, message", [
    ("eval.seed", 2**70, f"eval.seed: expected an integer in [0, 2147483647], found {2**70}"),
    ("eval.seed", -3, "eval.seed: expected an integer in [0, 2147483647], found -3"),
    ("policy.seed", 2**31, "policy.seed: expected an integer in [0, 2147483647], found 2147483648"),
    ("env.seed", 2**40, f"env.seed: expected an integer in [0, 2147483647], found {2**40}"),
    ("policy.expert_mistake_rate", float("nan"), "policy.expert_mistake_rate: expected a finite number, found nan"),
])
def test_bad_values_name_their_field(field, value, message):
  config = evaluation_defaults()
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(ValueError) as info:
    parse_eval_config(config)
  assert str(info.value) == message
