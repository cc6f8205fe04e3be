"""The optimizer: AdamW with a learning-rate schedule and optional global-norm clipping.

Gradient accumulation is not in here: the updates accumulate gradients over micro-batches
with a `lax.scan` and call the optimizer once per accumulated step, so a micro-batch the
PPO ratio guard skips can be left out of the average, and a step whose every micro-batch
was skipped can leave the parameters and the optimizer state exactly as they were.

Which variables are trained is decided here too: with LoRA only the adapters (and the value
head, when the algorithm trains one), otherwise the whole model (and the value head).
"""

from __future__ import annotations

import optax

from steptool_jax.config.run import OptimSection
from steptool_jax.models.lora import LORA_COLLECTION


def trainable_collections(*, lora: bool, value_head: bool) -> tuple[str, ...]:
  """The policy collections the optimizer updates: the adapters or the whole model, and the
  value head when the algorithm trains one (PPO does, SFT does not)."""
  return (LORA_COLLECTION if lora else "params",) + (("value_head",) if value_head else ())


def learning_rate_schedule(optim: OptimSection, num_steps: int) -> optax.Schedule:
  """Linear warmup from 0, then constant, linear decay to 0, or cosine decay to 0.

  `num_steps` counts optimizer steps over the whole run.
  """
  peak, warmup = optim.learning_rate, int(optim.warmup_steps)
  decay_steps = max(num_steps - warmup, 1)
  if optim.schedule == "constant":
    after = optax.constant_schedule(peak)
  elif optim.schedule == "linear":
    after = optax.linear_schedule(peak, 0.0, decay_steps)
  elif optim.schedule == "cosine":
    after = optax.cosine_decay_schedule(peak, decay_steps)
  else:
    raise ValueError(f"optim.schedule: expected constant, linear or cosine, found {optim.schedule!r}")
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def make_optimizer(optim: OptimSection, num_steps: int) -> optax.GradientTransformation:
  """`clip_by_global_norm` (when `max_grad_norm > 0`) then AdamW on the schedule."""
  adamw = optax.adamw(learning_rate_schedule(optim, num_steps), b1=optim.b1, b2=optim.b2, eps=optim.eps,
                      weight_decay=optim.weight_decay)
  if optim.max_grad_norm > 0:
    return optax.chain(optax.clip_by_global_norm(optim.max_grad_norm), adamw)
  return adamw
