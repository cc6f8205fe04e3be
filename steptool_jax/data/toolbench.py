"""ToolBench converted answers: query id -> query, available tools, answer tree.

Layout of one record (`converted_answers_G123.json`):

    {"query": str,
     "available_tools": [{"type": "function", "function": {name, description, parameters}}],
     "answer": {"method": str, "total_steps": int, "final_answer": str,
                "answer_details": [node]}}
    node = {"role": "system" | "user" | "assistant" | "tool", "message": ..., "next": [node]}

Tool nodes carry `{"name", "arguments", "response"}`; an assistant node, when present,
carries the free-text thought of the tool call that follows it; the last tool node
is `Finish`. The reader follows the chain of `next` nodes from the root.

The chain is followed in a loop and written by `jsonio.iter_encode`, so its length is not
limited by Python's recursion limit (an answer nests two JSON levels per node; the reader
takes up to `MAX_JSON_DEPTH` levels, about 25,000 steps with thoughts). Nodes nested
deeper than `INDENT_DEPTH` are written on one line: indenting them would cost the depth in
spaces on every line (a file quadratic in the chain length); shallower files are exactly
`json.dump(..., indent=2)`'s bytes. Values that are not the chain (tool parameters, call
arguments given as JSON objects) may nest at most `MAX_VALUE_DEPTH` levels.

A branching tree (a node with more than one `next`) is a search tree, not one
trajectory: which path to train on is a decision the data does not record, so the
reader rejects it with a `DataError` naming the node instead of guessing a path.
The `Finish` node is the source of truth for the final answer; `answer.final_answer`
is written back as the Finish call's arguments, as ToolBench does.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Iterator, Mapping

from steptool_jax.data.errors import DataError, describe
from steptool_jax.data.files import atomic_write, keep_valid, load_json_records
from steptool_jax.data.jsonio import MAX_JSON_DEPTH, iter_encode
from steptool_jax.data.records import FINISH, ToolCall, ToolSpec, Trajectory

_EXPECTED_FILE = "ToolBench converted answers (query id -> {query, available_tools, answer})"
# Containers nested deeper are written on one line: beyond about 500 answer nodes (250 steps
# with thoughts). `json.dump` could not write deeper files at all (recursion limit), so every
# file it could write is written byte for byte as before; the indentation costs at most
# 2,000 spaces a line.
INDENT_DEPTH = 1000
# Deepest tool parameters or call arguments: they are later serialised by `json.dumps`,
# which recurses; real JSON schemas nest a handful of levels.
MAX_VALUE_DEPTH = 64


def iter_converted_answers(path: str | os.PathLike[str]) -> Iterator[Trajectory | DataError]:
  """Each query's trajectory, or the `DataError` saying why its record is bad (the
  row is the query id)."""
  data, bad = load_json_records(path, expected=_EXPECTED_FILE)
  for query_id, record in data.items():
    if query_id in bad:
      yield bad[query_id]
      continue
    try:
      yield parse_converted_answer(path, query_id, record)
    except DataError as e:
      yield e


def read_converted_answers(path: str | os.PathLike[str], *, skip_invalid: bool = False,
                           errors: list[DataError] | None = None) -> list[Trajectory]:
  """Every trajectory in file order; the first bad record raises unless `skip_invalid`."""
  return keep_valid(iter_converted_answers(path), skip_invalid=skip_invalid, errors=errors)


def write_converted_answers(path: str | os.PathLike[str], trajectories: Iterable[Trajectory]) -> int:
  """Writes the same JSON layout the reader accepts (round trip), atomically; returns the count.

  Raises:
    ValueError: two trajectories share a query id, or one is too long for the reader.
  """
  data = {}
  for trajectory in trajectories:
    if trajectory.query_id in data:
      raise ValueError(f"duplicate query id {trajectory.query_id!r}: the file is keyed by query id")
    record = converted_answer_record(trajectory)
    depth = 2 * record["answer"]["total_steps"] + 5  # file, record, answer, details, 2 a node, message
    if depth > MAX_JSON_DEPTH:
      raise ValueError(f"query id {trajectory.query_id!r}: {record['answer']['total_steps']} answer nodes nest"
                       f" {depth:,} JSON levels, more than the reader takes ({MAX_JSON_DEPTH:,})")
    data[trajectory.query_id] = record
  with atomic_write(path, "w", encoding="utf-8") as f:
    for chunk in iter_encode(data, ensure_ascii=False, indent=2, indent_depth=INDENT_DEPTH):
      f.write(chunk)
    f.write("\n")
  return len(data)


def converted_answer_record(trajectory: Trajectory) -> dict[str, Any]:
  """The JSON record of one trajectory (the value under its query id)."""
  chain: list[dict[str, Any]] = [{"role": "system", "message": ""}, {"role": "user", "message": ""}]
  for call in trajectory.calls + ((trajectory.finish,) if trajectory.finish is not None else ()):
    if call.thought:
      chain.append({"role": "assistant", "message": call.thought})
    chain.append({"role": "tool", "message": {
        "name": call.name, "arguments": call.arguments, "response": call.response}})
  tail: list[dict[str, Any]] = []
  for node in reversed(chain):  # built from the leaf up: no recursion on long chains
    tail = [{**node, "next": tail}]
  return {
      "query": trajectory.query,
      "available_tools": [tool.to_openai() for tool in trajectory.tools],
      "answer": {
          "method": trajectory.method,
          "total_steps": len(chain),
          "final_answer": trajectory.finish.arguments if trajectory.finish is not None else "",
          "answer_details": tail,
      },
  }


def parse_converted_answer(path: str | os.PathLike[str], query_id: str, record: Any) -> Trajectory:
  """One trajectory from its JSON record."""
  if not isinstance(record, dict):
    raise DataError(path, query_id, "", f"expected an object with query, available_tools, answer,"
                    f" found {describe(record)}")
  query = _require(path, query_id, record, "query", str)
  tools = tuple(
      parse_tool(path, query_id, f"available_tools[{i}]", tool)
      for i, tool in enumerate(_require(path, query_id, record, "available_tools", list)))
  answer = _require(path, query_id, record, "answer", dict)
  method = answer.get("method", "")
  if not isinstance(method, str):
    raise DataError(path, query_id, "answer.method", f"expected a string, found {describe(method)}")
  final_answer = answer.get("final_answer", "")
  if not isinstance(final_answer, str):
    raise DataError(path, query_id, "answer.final_answer", f"expected a string, found {describe(final_answer)}")
  nodes = answer.get("answer_details")
  if not isinstance(nodes, list):
    raise DataError(path, query_id, "answer.answer_details", f"expected a list of nodes, found {describe(nodes)}")
  calls, finish = _follow_chain(path, query_id, nodes)
  if finish is None and final_answer.strip():
    raise DataError(path, query_id, "answer.answer_details",
                    "expected a Finish tool node carrying answer.final_answer, found none")
  return Trajectory(query_id=str(query_id), query=query, tools=tools, calls=calls, finish=finish,
                    method=method)


def parse_tool(path: str | os.PathLike[str], query_id: str, field: str, tool: Any) -> ToolSpec:
  """An OpenAI-format function `{"type": "function", "function": {...}}`."""
  if not isinstance(tool, dict) or not isinstance(tool.get("function"), dict):
    raise DataError(path, query_id, field,
                    f"expected {{'type': 'function', 'function': {{name, description, parameters}}}},"
                    f" found {describe(tool)}")
  if tool.get("type", "function") != "function":
    raise DataError(path, query_id, f"{field}.type", f"expected 'function', found {describe(tool['type'])}")
  function = tool["function"]
  name = function.get("name")
  if not isinstance(name, str) or not name:
    raise DataError(path, query_id, f"{field}.function.name", f"expected a tool name, found {describe(name)}")
  description = function.get("description", "")
  if not isinstance(description, str):
    raise DataError(path, query_id, f"{field}.function.description",
                    f"expected a string, found {describe(description)}")
  parameters = function.get("parameters", {})
  if not isinstance(parameters, dict):
    raise DataError(path, query_id, f"{field}.function.parameters",
                    f"expected a JSON-schema object, found {describe(parameters)}")
  _check_depth(path, query_id, f"{field}.function.parameters", parameters)
  return ToolSpec(name=name, description=description, parameters=parameters)


def _follow_chain(path: str | os.PathLike[str], query_id: str, nodes: list[Any]
                  ) -> tuple[tuple[ToolCall, ...], ToolCall | None]:
  calls: list[ToolCall] = []
  finish: ToolCall | None = None
  thought = ""
  field = "answer.answer_details"
  while nodes:
    if len(nodes) > 1:
      raise DataError(path, query_id, field,
                      f"expected a single chain of nodes, found a branching tree ({len(nodes)} children);"
                      " choose one path before converting")
    field += "[0]"
    node = nodes[0]
    if not isinstance(node, dict):
      raise DataError(path, query_id, field, f"expected a node {{role, message, next}}, found {describe(node)}")
    role = node.get("role")
    message = node.get("message")
    if role in ("system", "user"):
      pass  # their text lives in the top-level query and the tool list
    elif role == "assistant":
      if not isinstance(message, str):
        raise DataError(path, query_id, f"{field}.message", f"expected the thought text, found {describe(message)}")
      thought = message
    elif role == "tool":
      if finish is not None:
        raise DataError(path, query_id, field, "expected Finish to be the last tool node, found a call after it")
      call = _parse_tool_call(path, query_id, f"{field}.message", message, thought)
      thought = ""
      if call.name == FINISH:
        finish = call
      else:
        calls.append(call)
    else:
      raise DataError(path, query_id, f"{field}.role",
                      f"expected one of system, user, assistant, tool, found {describe(role)}")
    nodes = node.get("next", [])
    field += ".next"
    if not isinstance(nodes, list):
      raise DataError(path, query_id, field, f"expected a list of nodes, found {describe(nodes)}")
  return tuple(calls), finish


def _parse_tool_call(path: str | os.PathLike[str], query_id: str, field: str, message: Any,
                     thought: str) -> ToolCall:
  if not isinstance(message, dict):
    raise DataError(path, query_id, field, f"expected {{name, arguments, response}}, found {describe(message)}")
  name = message.get("name")
  if not isinstance(name, str) or not name:
    raise DataError(path, query_id, f"{field}.name", f"expected a tool name, found {describe(name)}")
  return ToolCall(name=name, arguments=_as_text(path, query_id, f"{field}.arguments", message.get("arguments", "")),
                  response=_as_text(path, query_id, f"{field}.response", message.get("response", "")),
                  thought=thought)


def _as_text(path: str | os.PathLike[str], query_id: str, field: str, value: Any) -> str:
  """Strings stay verbatim; a JSON object some producers write unserialised is serialised."""
  if isinstance(value, str):
    return value
  if isinstance(value, (dict, list)):
    _check_depth(path, query_id, field, value)
    return json.dumps(value, ensure_ascii=False)
  raise DataError(path, query_id, field, f"expected a string (or JSON object), found {describe(value)}")


def _require(path: str | os.PathLike[str], query_id: str, record: Mapping[str, Any], key: str,
             kind: type) -> Any:
  if key not in record:
    raise DataError(path, query_id, key, f"expected a {kind.__name__} field {key!r}, found it missing")
  value = record[key]
  if not isinstance(value, kind):
    raise DataError(path, query_id, key, f"expected a {kind.__name__}, found {describe(value)}")
  return value


def _check_depth(path: str | os.PathLike[str], query_id: str, field: str, value: Any) -> None:
  """Raises unless `value` nests at most `MAX_VALUE_DEPTH` containers (checked without recursion)."""
  level = [value]
  for _ in range(MAX_VALUE_DEPTH):
    level = [child for item in level if isinstance(item, (dict, list))
             for child in (item.values() if isinstance(item, dict) else item)]
    if not level:
      return
  raise DataError(path, query_id, field, f"expected JSON nested at most {MAX_VALUE_DEPTH} levels, found deeper")
