"""SFT conversations (`sft_conversations_G123.json`), the supervised data StepTool
fine-tunes Qwen2 and Llama 3.1 on before the RL stage.

Layout: query id -> {"cnt": int, "instances": [{"id": str, "conversations":
[{"from": "system" | "user" | "assistant" | "function", "value": str}]}]}. The
instances of one query are usually prefixes of the same dialogue (one per step).
"""

from __future__ import annotations

import os
from typing import Any, Iterator

from steptool_jax.data.errors import DataError, describe
from steptool_jax.data.files import keep_valid, load_json_records
from steptool_jax.data.records import ROLES, Conversation, Turn

_EXPECTED_FILE = "SFT conversations (query id -> {cnt, instances: [{id, conversations}]})"


def iter_sft_conversations(path: str | os.PathLike[str]) -> Iterator[Conversation | DataError]:
  """Every instance of every query, or the `DataError` saying why it is bad (the row is
  the query id, the field names the instance)."""
  data, bad = load_json_records(path, expected=_EXPECTED_FILE)
  for query_id, record in data.items():
    if query_id in bad:
      yield bad[query_id]
      continue
    if not isinstance(record, dict):
      yield DataError(path, query_id, "", f"expected an object {{cnt, instances}}, found {describe(record)}")
      continue
    instances = record.get("instances")
    if not isinstance(instances, list):
      yield DataError(path, query_id, "instances", f"expected a list of {{id, conversations}},"
                      f" found {describe(instances)}")
      continue
    for i, instance in enumerate(instances):
      try:
        yield parse_instance(path, query_id, f"instances[{i}]", instance)
      except DataError as e:
        yield e


def read_sft_conversations(path: str | os.PathLike[str], *, skip_invalid: bool = False,
                           errors: list[DataError] | None = None) -> list[Conversation]:
  """Every conversation in file order; the first bad one raises unless `skip_invalid`."""
  return keep_valid(iter_sft_conversations(path), skip_invalid=skip_invalid, errors=errors)


def parse_instance(path: str | os.PathLike[str], query_id: str, field: str, instance: Any) -> Conversation:
  """One conversation; it must contain at least one assistant turn (the loss needs one)."""
  if not isinstance(instance, dict):
    raise DataError(path, query_id, field, f"expected {{id, conversations}}, found {describe(instance)}")
  turns_json = instance.get("conversations")
  if not isinstance(turns_json, list) or not turns_json:
    raise DataError(path, query_id, f"{field}.conversations",
                    f"expected a non-empty list of {{from, value}} turns, found {describe(turns_json)}")
  turns = []
  for j, turn in enumerate(turns_json):
    where = f"{field}.conversations[{j}]"
    if not isinstance(turn, dict):
      raise DataError(path, query_id, where, f"expected {{from, value}}, found {describe(turn)}")
    role = turn.get("from")
    if role not in ROLES:
      raise DataError(path, query_id, f"{where}.from", f"expected one of {', '.join(ROLES)},"
                      f" found {describe(role)}")
    value = turn.get("value")
    if not isinstance(value, str):
      raise DataError(path, query_id, f"{where}.value", f"expected a string, found {describe(value)}")
    if role == "assistant" and not value.strip():
      raise DataError(path, query_id, f"{where}.value", "expected a non-empty assistant action, found an empty string")
    turns.append(Turn(role=role, content=value))
  if not any(turn.role == "assistant" for turn in turns):
    raise DataError(path, query_id, f"{field}.conversations", "expected at least one assistant turn, found none")
  instance_id = instance.get("id", "")
  if isinstance(instance_id, bool) or not isinstance(instance_id, (str, int)):
    raise DataError(path, query_id, f"{field}.id", f"expected a string (or integer) id, found {describe(instance_id)}")
  return Conversation(id=str(instance_id), query_id=str(query_id), turns=tuple(turns))
