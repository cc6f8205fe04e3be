r"""StepTool PPO for Llama-3.1-8B(-Instruct), with the paper's hyperparameters.

    python -m steptool_jax.train --config=configs/llama.py --workdir=/runs/llama-steptool \
        --config.model.path=/ckpt/Llama-3.1-8B-Instruct [--config.data.train_path=/data/train.tsv]

`model.path` is required (a local Hugging Face directory: config.json, safetensors,
tokenizer). Without `data.train_path` the run trains on the built-in environment's
step-grained data rendered in the Llama 3 chat format. Variant `sft`: supervised
fine-tuning first (`python -m steptool_jax.sft --config=configs/llama.py:sft ...`), then
PPO with `--config.model.init_from=<the SFT workdir>`.
"""

from __future__ import annotations

from steptool_jax.config.run import apply_paper_recipe, base_config


def get_config(arg: str = ""):
  config = apply_paper_recipe(base_config())
  config.data.template = "llama3"
  config.data.add_bos = True  # <|begin_of_text|>
  # PEFT-style targets of the StepTool configs for Llama 3.1: all seven projections.
  config.model.lora.targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
  if arg == "sft":
    config.algorithm = "sft"
    config.batch.size = config.batch.minibatch_size * config.batch.grad_accum_steps
    config.optim.learning_rate = 2e-5
    config.train.num_epochs = 2
  elif arg:
    raise ValueError(f"configs/llama.py: unknown variant {arg!r}; expected '' or 'sft'")
  return config
