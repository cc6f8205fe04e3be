"""Rendering: the published ToolLLaMA TSV is reproduced exactly; Qwen2 and Llama 3.1 by hand; the
ChatML format against SmolLM2's own chat template, token for token."""

import ast
import re

import pytest

from steptool_jax.data.records import Conversation, ToolCall, ToolSpec, Trajectory, Turn
from steptool_jax.data.render import TEMPLATES, render_conversation, render_steps, trajectory_conversation
from steptool_jax.data.sft import read_sft_conversations
from steptool_jax.data.tsv import read_step_grained_tsv


def _trajectory_from_tsv_row(row):
  """Rebuilds the trajectory behind a published row by plain string surgery."""
  preamble = re.fullmatch(r"System:\nSpecifically, you have access to the following APIs: (\[.*?\])\n"
                          r"User:\n(.*)\nBegin!\n\nAssistant:\n", row.prompts[0], re.DOTALL)
  tool_names = ast.literal_eval(preamble.group(1))
  calls = []
  for i, response in enumerate(row.responses):
    action = re.fullmatch(r"Action: (.*?)\nAction Input: (.*)\n", response, re.DOTALL)
    observation = row.prompts[i + 1][len("Function:\n"):-len("\nAssistant:\n")] if i + 1 < row.num_steps else ""
    calls.append(ToolCall(action.group(1), action.group(2), observation))
  return Trajectory(query_id="0", query=preamble.group(2), tools=tuple(ToolSpec(n) for n in tool_names),
                    calls=tuple(calls[:-1]), finish=calls[-1])


def test_toolllama_reproduces_the_published_rows(reference_dir):
  rows = read_step_grained_tsv(reference_dir / "toolllama_step_grained_for_ppo.tsv")
  for row in rows:
    prompts, responses = render_steps(_trajectory_from_tsv_row(row), "toolllama")
    assert prompts == row.prompts
    assert responses == row.responses


TRAJECTORY = Trajectory(
    query_id="1", query="Weather in Paris?", tools=(ToolSpec("w"), ToolSpec("Finish")),
    calls=(ToolCall("w", '{"city": "Paris"}', '{"error": "", "response": "sunny"}', thought="Check it."),),
    finish=ToolCall("Finish", '{"return_type": "give_answer", "final_answer": "Sunny."}'))
SYSTEM = "Specifically, you have access to the following APIs: ['w', 'Finish']"
ACTION_1 = 'Thought: Check it.\nAction: w\nAction Input: {"city": "Paris"}'
ACTION_2 = 'Action: Finish\nAction Input: {"return_type": "give_answer", "final_answer": "Sunny."}'
OBSERVATION = '{"error": "", "response": "sunny"}'


def test_toolllama_by_hand():
  prompts, responses = render_steps(TRAJECTORY, "toolllama")
  assert prompts == (f"System:\n{SYSTEM}\nUser:\nWeather in Paris?\nBegin!\n\nAssistant:\n",
                     f"Function:\n{OBSERVATION}\nAssistant:\n")
  assert responses == (ACTION_1 + "\n", ACTION_2 + "\n")


def test_qwen2_by_hand():
  prompts, responses = render_steps(TRAJECTORY, "qwen2")
  assert prompts == (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWeather in Paris?\nBegin!\n"
                     "<|im_end|>\n<|im_start|>assistant\n",
                     f"\n<|im_start|>tool\n{OBSERVATION}<|im_end|>\n<|im_start|>assistant\n")
  assert responses == (ACTION_1 + "<|im_end|>", ACTION_2 + "<|im_end|>")


def test_llama3_by_hand():
  prompts, responses = render_steps(TRAJECTORY, "llama3", system_prompt="Be brief.")
  header = "<|start_header_id|>{}<|end_header_id|>\n\n"
  assert prompts == (header.format("system") + "Be brief.<|eot_id|>" + header.format("user")
                     + "Weather in Paris?\nBegin!\n<|eot_id|>" + header.format("assistant"),
                     header.format("ipython") + OBSERVATION + "<|eot_id|>" + header.format("assistant"))
  assert responses == (ACTION_1 + "<|eot_id|>", ACTION_2 + "<|eot_id|>")


def test_trajectory_without_finish_ends_at_its_last_call():
  trajectory = Trajectory("2", "q", (), TRAJECTORY.calls, finish=None)
  prompts, responses = render_steps(trajectory, "toolllama")
  assert len(prompts) == len(responses) == 1 and responses[0] == ACTION_1 + "\n"


def test_conversation_segments_alternate_and_concatenate_to_the_dialogue():
  conversation = Conversation("c", "q", (
      Turn("system", "S"), Turn("user", "\nU\n"), Turn("user", "more"), Turn("assistant", "\nA1"),
      Turn("function", "F"), Turn("assistant", "\nA2")))
  segments = render_conversation(conversation, "toolllama")
  assert segments == (("System:\nS\nUser:\nU\n\nUser:\nmore\nAssistant:\n", False), ("A1\n", True),
                      ("Function:\nF\nAssistant:\n", False), ("A2\n", True))


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_reference_sft_assistant_turn_is_one_action(reference_dir, template):
  for conversation in read_sft_conversations(reference_dir / "sft_conversations_G123.json")[:8]:
    segments = render_conversation(conversation, template)
    actions = [text for text, is_action in segments if is_action]
    assistant = [turn.content for turn in conversation.turns if turn.role == "assistant"]
    assert len(actions) == len(assistant)
    for action, content in zip(actions, assistant):
      assert content.lstrip("\n") in action


def test_unknown_template():
  with pytest.raises(ValueError, match="template: expected one of toolllama, qwen2, llama3, found 'chatml'"):
    render_steps(TRAJECTORY, "chatml")


def _expert_episode():
  """A built-in-environment episode with several calls, one of them failing (an error observation)."""
  from steptool_jax.envs.episode import EnvConfig  # noqa: PLC0415
  from steptool_jax.envs.expert import Mistakes, run_expert  # noqa: PLC0415
  from steptool_jax.envs.tasks import generate_tasks  # noqa: PLC0415

  for task in generate_tasks(80, seed=3)["train"]:
    episode = run_expert(task, mistakes=Mistakes(rate=0.4), seed=1, config=EnvConfig(template="qwen2")).episode
    errors = [call for call in episode.calls if '"error": ""' not in call.response]
    if len(episode.calls) >= 3 and errors and episode.finish is not None:
      return task, episode
  raise AssertionError("no multi-call episode with a failed call among the tasks")


def _chat_ids(tokenizer, messages, **kwargs):
  return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False, **kwargs))


def test_qwen2_format_is_smollm2s_own_chat_template_token_for_token(smollm2_tokenizer):
  """SmolLM2-Instruct's template is plain ChatML, like Qwen2-Instruct's: the `qwen2` format renders
  a real environment episode to exactly the tokens `apply_chat_template` gives, in training
  (per-segment tokenisation) and in rollouts (the prompts the environment returns, step by step)."""
  from steptool_jax.envs import episode as env  # noqa: PLC0415

  task, episode = _expert_episode()
  system = env.system_prompt(task)
  conversation = trajectory_conversation(episode.trajectory(), system_prompt=system)
  roles = {"system": "system", "user": "user", "assistant": "assistant", "function": "tool"}
  messages = [{"role": roles[turn.role], "content": turn.content} for turn in conversation.turns]
  assert [m["role"] for m in messages[:5]] == ["system", "user", "assistant", "tool", "assistant"]

  # Training rows: each segment tokenised on its own, as data/tokenize.py does.
  segments = render_conversation(conversation, "qwen2")
  ids = [t for text, _ in segments for t in smollm2_tokenizer.encode(text, add_special_tokens=False)]
  assert ids == _chat_ids(smollm2_tokenizer, messages)
  actions = [smollm2_tokenizer.encode(text) for text, is_action in segments if is_action]
  assert all(action[-1] == smollm2_tokenizer.eos_token_id for action in actions)  # <|im_end|> ends each action

  # Rollouts: prompt_0, then each action as the agent wrote it (ending in <|im_end|>) and the
  # prompt the environment answers with; before every action, the context is the template's.
  running, prompt = env.reset(task, env.EnvConfig(template="qwen2"))
  seen = messages[:2]
  context: list[int] = []
  for action in episode.actions:
    context += smollm2_tokenizer.encode(prompt)
    assert context == _chat_ids(smollm2_tokenizer, seen, add_generation_prompt=True), len(seen)
    context += smollm2_tokenizer.encode(action + "<|im_end|>")
    running, result = env.step(running, action)
    seen = seen + [{"role": "assistant", "content": action}, {"role": "tool", "content": result.observation}]
    prompt = result.prompt
  assert result.done and prompt is None and len(seen) > 6
