"""The built-in tokenizer of the tiny default model: a byte-level BPE trained on the
environment's own text, shipped as package data (`steptool_jax/envs/tokenizer/`).

- Byte-level BPE (every string round-trips exactly), digits split one per token so a
  small model copies numbers from an observation into its answer digit by digit.
- The ToolLLaMA role markers (`System:\\n`, `User:\\n`, `Assistant:\\n`, `Function:\\n`) are
  special tokens: a prompt always ends in the single token `Assistant:\\n`, so the
  boundary between context and action is exact.
- `<s>` (BOS), `</s>` (EOS), `<pad>`; no post-processor: the data pipeline adds BOS/EOS
  explicitly.
- A chat template that renders a conversation exactly as `steptool_jax.data.render`
  renders the `toolllama` template, with `{% generation %}` around assistant actions
  (so `apply_chat_template(..., return_assistant_tokens_mask=True)` marks them).

The training text is fixed (expert rollouts of the train split for a fixed seed, plus the
tool schemas), so `python -m steptool_jax.envs build-tokenizer` rebuilds the same files.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

TOKENIZER_DIR = pathlib.Path(__file__).resolve().parent / "tokenizer"
VOCAB_SIZE = 4096
PAD, BOS, EOS = "<pad>", "<s>", "</s>"
ROLE_MARKERS = ("System:\n", "User:\n", "Assistant:\n", "Function:\n")
SPECIAL_TOKENS = (PAD, BOS, EOS) + ROLE_MARKERS

# The corpus: fixed, so the tokenizer is reproducible.
CORPUS_TASKS = 3000
CORPUS_SEED = 0
CORPUS_MISTAKE_RATE = 0.3

CHAT_TEMPLATE = (
    "{%- set names = {'system': 'System', 'user': 'User', 'assistant': 'Assistant', "
    "'function': 'Function', 'tool': 'Function'} -%}"
    "{%- for message in messages -%}"
    "{%- set content = message['content'] -%}"
    "{%- if content.startswith('\\n') -%}{%- set content = content[1:] -%}{%- endif -%}"
    "{{- names[message['role']] + ':\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- content + '\\n' -}}{%- endgeneration -%}"
    "{%- else -%}{{- content + '\\n' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'Assistant:\\n' -}}{%- endif -%}"
)


def corpus(num_tasks: int = CORPUS_TASKS, seed: int = CORPUS_SEED,
           mistake_rate: float = CORPUS_MISTAKE_RATE) -> Iterator[str]:
  """The training text: every prompt and action of expert rollouts on the train split
  (with mistakes, so error observations are in it too), then the tool schemas.
  Only the train split: held-out entities stay out of the vocabulary's making."""
  from steptool_jax.data import render  # pylint: disable=import-outside-toplevel
  from steptool_jax.envs import episode, expert, tasks, tools  # pylint: disable=import-outside-toplevel
  mistakes = expert.Mistakes(rate=mistake_rate)
  for task in tasks.generate_tasks(num_tasks, seed)["train"]:
    trajectory = expert.run_expert(task, mistakes=mistakes, seed=seed).episode.trajectory()
    prompts, responses = render.render_steps(trajectory, "toolllama",
                                             system_prompt=episode.system_prompt(task))
    for prompt, response in zip(prompts, responses):
      yield prompt
      yield response
  for tool in (*(t.spec for t in tools.TOOLS.values()), tools.FINISH_SPEC):
    yield json.dumps(tool.to_openai(), ensure_ascii=False)


def train_tokenizer(texts: Iterable[str], vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
  """A byte-level BPE with the special tokens above, wrapped for transformers."""
  tokenizer = Tokenizer(models.BPE(unk_token=None))
  tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Digits(individual_digits=True),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tokenizer.train_from_iterator(texts, trainer=trainer)
  return PreTrainedTokenizerFast(
      tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD,
      extra_special_tokens=list(ROLE_MARKERS), chat_template=CHAT_TEMPLATE,
      clean_up_tokenization_spaces=False, model_max_length=4096)


def build_tokenizer(out_dir: str | os.PathLike[str] = TOKENIZER_DIR) -> PreTrainedTokenizerFast:
  """Trains on the fixed corpus and writes the tokenizer files to `out_dir`."""
  tokenizer = train_tokenizer(corpus())
  tokenizer.save_pretrained(out_dir)
  return tokenizer


def load_tokenizer(path: str | os.PathLike[str] = TOKENIZER_DIR) -> PreTrainedTokenizerFast:
  """The built-in tokenizer (a fresh object on every call; no network access)."""
  return PreTrainedTokenizerFast.from_pretrained(os.fspath(path), local_files_only=True)
