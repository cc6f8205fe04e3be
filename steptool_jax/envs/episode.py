"""The episode API that rollouts drive: `reset(task)` then `step(episode, action_text)`.

Episodes are immutable values: `step` returns a new `Episode` and a `StepResult`, so a
batch of rollouts is a list of episodes advanced independently, and replaying the same
actions gives the same episode. Nothing a policy writes makes `step` raise: an action
that cannot be parsed, a function the task does not offer, bad JSON, arguments that
are too large, an invalid `Finish`, an action after the episode ended — each becomes an
error observation (and, except for the last, a failed step of the trajectory).

Prompts are rendered by `steptool_jax.data.render.render_steps`, the same code that
renders the training data, so `prompt_0 + action_0 + prompt_1 + action_1 + ...` of an
episode is exactly the text of its step-grained row.
"""

from __future__ import annotations

import dataclasses
import json

from steptool_jax.data import render
from steptool_jax.data.records import FINISH, GIVE_ANSWER, GIVE_UP, ToolCall, Trajectory
from steptool_jax.envs import react
from steptool_jax.envs.tasks import Task
from steptool_jax.envs.tools import call_tool, envelope

METHOD = "steptool_env"

# StepResult.outcome values.
CALLED = "called"  # a well-formed call to an offered tool; the tool answered (maybe with an error)
INVALID_ACTION = "invalid_action"  # the text is not a well-formed action
UNKNOWN_TOOL = "unknown_tool"  # well formed, but the function is not offered by the task
INVALID_FINISH = "invalid_finish"  # Finish with arguments that do not say how to finish
ANSWERED = "answered"  # Finish(give_answer): done
GAVE_UP = "gave_up"  # Finish(give_up_and_restart): done
STEP_LIMIT = "step_limit"  # this action used the last step without finishing: done
AFTER_DONE = "after_done"  # an action sent to a finished episode: ignored


@dataclasses.dataclass(frozen=True)
class EnvConfig:
  """Episode limits and rendering.

  `max_steps` counts every action, Finish included. `tool_descriptions=False` lists the
  offered functions with their arguments only (a shorter prompt for a tiny model).
  """

  max_steps: int = 10
  max_action_chars: int = react.MAX_ACTION_CHARS
  max_argument_chars: int = react.MAX_ARGUMENT_CHARS
  template: str = "toolllama"
  tool_descriptions: bool = True


@dataclasses.dataclass(frozen=True)
class StepResult:
  """What the environment answers to one action.

  `observation` is the tool's envelope text (empty after a valid Finish); `prompt` is the
  text to append before the next action (None when the episode is done).
  """

  observation: str
  prompt: str | None
  done: bool
  outcome: str


@dataclasses.dataclass(frozen=True)
class Episode:
  """The state of one episode: the task and the steps taken so far.

  `actions` are the action texts exactly as the agent wrote them; `calls` are the
  intermediate steps as `ToolCall`s (name, arguments as written, observation), `finish`
  the accepted Finish call.
  """

  task: Task
  config: EnvConfig = EnvConfig()
  calls: tuple[ToolCall, ...] = ()
  finish: ToolCall | None = None
  actions: tuple[str, ...] = ()
  step_limit_reached: bool = False

  @property
  def done(self) -> bool:
    return self.finish is not None or self.step_limit_reached

  @property
  def num_steps(self) -> int:
    return len(self.actions)

  def trajectory(self) -> Trajectory:
    return Trajectory(query_id=self.task.task_id, query=self.task.query, tools=self.task.tools,
                      calls=self.calls, finish=self.finish, method=METHOD)


def system_prompt(task: Task, *, tool_descriptions: bool = True) -> str:
  """The environment's system text: how to act, and each offered function with its arguments
  (and its description, unless `tool_descriptions=False`)."""
  lines = ["You are an assistant that answers the user by calling functions. At each step write "
           "'Thought:', then 'Action:' with one function name and 'Action Input:' with its "
           "arguments as a JSON object. End with Finish.", "Functions:"]
  for tool in task.tools:
    properties = tool.parameters.get("properties", {})
    required = set(tool.parameters.get("required", ()))
    args = ", ".join(name if name in required else f"{name}?" for name in properties)
    lines.append(f"- {tool.name}({args}): {tool.description}" if tool_descriptions else f"- {tool.name}({args})")
  return "\n".join(lines)


def _prompt(episode: Episode) -> str:
  """The text shown before action number `len(episode.calls)`."""
  placeholder = ToolCall(name=FINISH, arguments="{}")  # only prompts are used; any final action works
  trajectory = dataclasses.replace(episode.trajectory(), finish=placeholder)
  prompts, _ = render.render_steps(trajectory, episode.config.template,
                                   system_prompt=system_prompt(episode.task,
                                                               tool_descriptions=episode.config.tool_descriptions))
  return prompts[len(episode.calls)]


def reset(task: Task, config: EnvConfig = EnvConfig()) -> tuple[Episode, str]:
  """A fresh episode for `task` and its first prompt (system text, user query, assistant header)."""
  episode = Episode(task=task, config=config)
  return episode, _prompt(episode)


def _finish_problem(arguments: dict) -> str:
  return_type = arguments.get("return_type")
  if return_type not in (GIVE_ANSWER, GIVE_UP):
    return f"Finish needs return_type {GIVE_ANSWER!r} or {GIVE_UP!r}; got {return_type!r}"
  if return_type == GIVE_ANSWER:
    answer = arguments.get("final_answer")
    if not isinstance(answer, str) or not answer.strip():
      return "Finish with give_answer needs a non-empty final_answer string"
  unexpected = set(arguments) - {"return_type", "final_answer"}
  if unexpected:
    return f"unexpected Finish argument(s): {', '.join(sorted(unexpected))}"
  return ""


def _act(episode: Episode, action: str) -> tuple[ToolCall, bool, str]:
  """(the step as a ToolCall, whether it is an accepted Finish, outcome)."""
  parsed = react.parse_action(action, max_action_chars=episode.config.max_action_chars,
                              max_argument_chars=episode.config.max_argument_chars)

  def failed(message: str, outcome: str) -> tuple[ToolCall, bool, str]:
    return ToolCall(name=parsed.name, arguments=parsed.arguments_text, response=envelope(error=message),
                    thought=parsed.thought), False, outcome

  if not parsed.ok:
    return failed(parsed.error, INVALID_ACTION)
  if parsed.name not in episode.task.tool_names:
    return failed(f"no such function: {parsed.name!r}; the functions are "
                  f"{', '.join(episode.task.tool_names)}", UNKNOWN_TOOL)
  if parsed.name == FINISH:
    problem = _finish_problem(parsed.arguments)
    if problem:
      return failed(problem, INVALID_FINISH)
    outcome = ANSWERED if parsed.arguments["return_type"] == GIVE_ANSWER else GAVE_UP
    return ToolCall(name=FINISH, arguments=parsed.arguments_text, thought=parsed.thought), True, outcome
  response = call_tool(parsed.name, parsed.arguments)
  return ToolCall(name=parsed.name, arguments=parsed.arguments_text, response=response,
                  thought=parsed.thought), False, CALLED


def step(episode: Episode, action: str) -> tuple[Episode, StepResult]:
  """Applies one action. Never raises on any text the agent writes."""
  if episode.done:
    message = "the episode is over; no further actions are accepted"
    return episode, StepResult(envelope(error=message), None, True, AFTER_DONE)
  call, finished, outcome = _act(episode, action if isinstance(action, str) else repr(action))
  actions = episode.actions + (action if isinstance(action, str) else repr(action),)
  if finished:
    episode = dataclasses.replace(episode, finish=call, actions=actions)
    return episode, StepResult("", None, True, outcome)
  limit = len(actions) >= episode.config.max_steps
  episode = dataclasses.replace(episode, calls=episode.calls + (call,), actions=actions,
                                step_limit_reached=limit)
  if limit:
    return episode, StepResult(call.response, None, True, STEP_LIMIT)
  return episode, StepResult(call.response, _prompt(episode), False, outcome)


def observation_payload(observation: str) -> tuple[str, object]:
  """(error, response) of an envelope text; a non-envelope text is returned as an error."""
  try:
    data = json.loads(observation)
  except ValueError:
    return observation, None
  if not isinstance(data, dict):
    return observation, None
  return str(data.get("error", "")), data.get("response")
