r"""StepTool PPO for Qwen2-7B(-Instruct), with the paper's hyperparameters.

    python -m steptool_jax.train --config=configs/qwen2.py --workdir=/runs/qwen2-steptool \
        --config.model.path=/ckpt/Qwen2-7B-Instruct [--config.data.train_path=/data/train.tsv]

Qwen2 has no BOS token (`data.add_bos = False`); its 28 query / 4 key-value heads allow a
tensor axis of 1, 2 or 4 devices (put more devices on `mesh.fsdp` or `mesh.data` and raise
`batch.minibatch_size` to match). Variant `sft` as in configs/llama.py.
"""

from __future__ import annotations

from steptool_jax.config.run import apply_paper_recipe, base_config


def get_config(arg: str = ""):
  config = apply_paper_recipe(base_config())
  config.data.template = "qwen2"
  config.data.add_bos = False
  config.model.lora.targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
  if arg == "sft":
    config.algorithm = "sft"
    config.batch.size = config.batch.minibatch_size * config.batch.grad_accum_steps
    config.optim.learning_rate = 2e-5
    config.train.num_epochs = 2
  elif arg:
    raise ValueError(f"configs/qwen2.py: unknown variant {arg!r}; expected '' or 'sft'")
  return config
