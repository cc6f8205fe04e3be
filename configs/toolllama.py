r"""StepTool PPO for ToolLLaMA-2-7b-v2 (Llama-2-7B, linear RoPE scaling x2), the paper's setup.

    python -m steptool_jax.train --config=configs/toolllama.py --workdir=/runs/toolllama-steptool \
        --config.model.path=/ckpt/ToolLLaMA-2-7b-v2 \
        --config.data.train_path=/data/toolllama_step_grained_for_ppo.tsv

ToolLLaMA is already fine-tuned on ToolBench, so it goes straight to PPO. LoRA r 16 /
alpha 16 on q_proj and v_proj (PEFT's Llama defaults, as the original config), the
`toolllama` text format, response up to 1200 tokens (its 8k RoPE-scaled context leaves room).
"""

from __future__ import annotations

from steptool_jax.config.run import apply_paper_recipe, base_config


def get_config(arg: str = ""):
  if arg:
    raise ValueError(f"configs/toolllama.py: unknown variant {arg!r}; it has none")
  config = apply_paper_recipe(base_config())
  config.data.template = "toolllama"
  config.data.add_bos = True
  config.data.max_response_len = 1200
  config.model.lora.rank = 16
  config.model.lora.alpha = 16.0
  config.model.lora.targets = ("q_proj", "v_proj")
  return config
