"""Pure RL math over [batch, time] arrays: KL penalties, GAE, PPO losses.

Nothing here imports models or data; every function is jit/vmap/grad-safe and
shape-polymorphic over leading axes. See docs/rl.md for the math.
"""

from steptool_jax.rl.gae import compute_gae
from steptool_jax.rl.group_advantages import (critic_free_advantages, group_step_advantages, step_returns_to_go,
                                             steps_to_tokens)
from steptool_jax.rl.kl import kl_penalty, mean_sequence_kl
from steptool_jax.rl.kl_controller import (KLController, adaptive_kl_controller, fixed_kl_controller,
                                           update_kl_controller)
from steptool_jax.rl.masked import explained_variance, masked_mean, masked_var, masked_whiten
from steptool_jax.rl.ppo import entropy_from_logits, ppo_loss
from steptool_jax.rl.recurrence import reverse_linear_recurrence

__all__ = [
    "KLController",
    "adaptive_kl_controller",
    "compute_gae",
    "critic_free_advantages",
    "entropy_from_logits",
    "explained_variance",
    "fixed_kl_controller",
    "group_step_advantages",
    "kl_penalty",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "mean_sequence_kl",
    "ppo_loss",
    "reverse_linear_recurrence",
    "step_returns_to_go",
    "steps_to_tokens",
    "update_kl_controller",
]
