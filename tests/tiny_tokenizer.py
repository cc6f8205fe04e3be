"""A tiny byte-level BPE tokenizer built in-process, for tests (no downloads)."""

from __future__ import annotations

import functools

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

_CORPUS = [
    "System:\nYou can use tools.\nUser:\nWhat is the weather in Paris?\nBegin!\n\nAssistant:\n",
    'Thought: I should call the weather tool.\nAction: get_weather_for_weather\nAction Input: {"city": "Paris"}\n',
    'Function:\n{"error": "", "response": {"temp_c": 21, "sky": "clear"}}\nAssistant:\n',
    'Action: Finish\nAction Input: {"return_type": "give_answer", "final_answer": "21 C and clear."}\n',
    "<|im_start|>system\n<|im_end|>\n<|im_start|>user\n<|im_start|>assistant\n",
    "<|start_header_id|>assistant<|end_header_id|>\n\n<|eot_id|>",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"{}[]()<>_-+=/\\|@#$%^&*~`",
]
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]


@functools.lru_cache(maxsize=None)
def tiny_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
  """A deterministic byte-level BPE with <s>/</s>/<pad>; every string round-trips."""
  tok = Tokenizer(models.BPE(unk_token=None))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
  return PreTrainedTokenizerFast(
      tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")
