r"""The embedded default: StepTool PPO on the built-in environment, on a laptop CPU.

    python -m steptool_jax.train --config=configs/tiny.py --workdir=/tmp/steptool-tiny
    python -m steptool_jax.sft --config=configs/tiny.py:sft --workdir=/tmp/steptool-tiny-sft

The environment's scripted expert makes the step-grained data (200 tasks, mistake rate
0.3; generated into the workdir's cache on first use, in about a second), the built-in
tokenizer reads it, and a 2-layer model (hidden 64, random init) trains on it: 20 PPO
iterations per epoch over 160 rows, 3 epochs, one length bucket of 512 tokens. It checks
the whole pipeline in minutes; a random-init policy is no tool user, so for learning
curves that mean something start PPO from the `sft` variant (`--config.model.init_from`).

Variants (combine with commas, e.g. `configs/tiny.py:lora,final`):
  sft      supervised fine-tuning on the environment's solved episodes
  lora     LoRA adapters (r 8 / alpha 16) and the value head, base frozen
  final    PPO with the final reward only (the paper's PPO baseline)
  summed   all step rewards summed onto the last action (no step-grained credit)
  mesh8    minibatches of 8 rows and no accumulation, for meshes of up to 8 batch shards
           (1 x 8 devices, or 2 x 4 / 4 x 2 local processes: docs/training.md "Multi-host");
           the default's 2 rows x 4 passes fit at most 2. Each optimizer step still averages
           the gradients of the same 8 rows.
"""

from __future__ import annotations

from steptool_jax.config.run import base_config

VARIANTS = ("sft", "lora", "final", "summed", "mesh8")


def get_config(arg: str = ""):
  variants = tuple(filter(None, (arg or "").split(",")))
  unknown = set(variants) - set(VARIANTS)
  if unknown:
    raise ValueError(f"configs/tiny.py: unknown variants {sorted(unknown)}; expected some of {VARIANTS}")
  config = base_config()
  config.tokenizer = "builtin"
  config.model.preset = "tiny"
  config.mesh = {"data": -1, "fsdp": 1, "tensor": 1}
  config.data.template = "toolllama"  # the built-in tokenizer's format
  config.data.max_context_len = 384
  config.data.max_response_len = 128
  config.data.min_bucket_len = 512  # one bucket: one compilation
  config.env.num_tasks = 200
  config.env.mistake_rate = 0.3
  config.optim.learning_rate = 1e-4
  # Offline data: whitening with a mean shift gives the same tokens (the early tokens of
  # each action, far from the step's reward) a negative advantage on every pass, and their
  # log-probs then fall without bound (measured: sequence KL -47 after 60 iterations and
  # still falling). Unshifted advantages keep the KL near the controller's target (~6).
  config.ppo.whiten_advantages = False
  config.train.num_epochs = 3
  config.checkpoint.every_steps = 20
  config.checkpoint.keep = 2

  if "sft" in variants:
    config.algorithm = "sft"
    config.optim.learning_rate = 1e-3
    config.train.num_epochs = 3
  if "lora" in variants:
    config.model.lora.enabled = True
    config.model.lora.rank = 8
    config.model.lora.alpha = 16.0
  if "final" in variants:
    config.reward.placement = "final_only"
  if "summed" in variants:
    config.reward.placement = "summed"
  if "mesh8" in variants:
    config.batch.minibatch_size = 8
    config.batch.grad_accum_steps = 1
  return config
