"""Pure RL math over [batch, time] arrays: KL penalties, GAE, PPO losses.

Nothing here imports models or data; every function is jit/vmap/grad-safe and
shape-polymorphic over leading axes. See docs/rl.md for the math.
"""

from steptool_jax.rl.gae import compute_gae
from steptool_jax.rl.group_advantages import (critic_free_advantages, group_step_advantages, step_returns_to_go,
                                             steps_to_tokens)
from steptool_jax.rl.kl import KL_PENALTIES, kl_penalty
from steptool_jax.rl.kl_controller import (KLController, adaptive_kl_controller, fixed_kl_controller,
                                           make_kl_controller, update_kl_controller)
from steptool_jax.rl.masked import explained_variance, masked_mean, masked_var, masked_whiten
from steptool_jax.rl.ppo import ppo_loss
from steptool_jax.rl.recurrence import reverse_linear_recurrence

__all__ = [
    "KLController",
    "KL_PENALTIES",
    "adaptive_kl_controller",
    "compute_gae",
    "critic_free_advantages",
    "explained_variance",
    "fixed_kl_controller",
    "group_step_advantages",
    "kl_penalty",
    "make_kl_controller",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "ppo_loss",
    "reverse_linear_recurrence",
    "step_returns_to_go",
    "steps_to_tokens",
    "update_kl_controller",
]
