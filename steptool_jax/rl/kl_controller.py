"""The KL coefficient as a pure pytree state with a jittable update.

Adaptive control (Ziegler et al., 2019), as in the paper's configs (init 0.3,
target 6, horizon 10000): after a batch whose per-sequence KL is ``kl``,

    error = clip(kl / target - 1, -0.2, 0.2)
    coef <- coef * (1 + error * n_steps / horizon)

where ``n_steps`` is the number of sequences in the batch (all hosts). A fixed
controller keeps ``coef``. The choice and its constants are static fields, so the
state checkpoints as one number and a jitted update never retraces on its value.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

PROPORTIONAL_ERROR_CLIP = 0.2
KL_CONTROLLERS: tuple[str, ...] = ("adaptive", "fixed")


@flax.struct.dataclass
class KLController:
  """``value`` is the current coefficient; ``target=None`` means a fixed coefficient."""

  value: jax.Array
  target: float | None = flax.struct.field(pytree_node=False, default=None)
  horizon: float = flax.struct.field(pytree_node=False, default=10000.0)


def adaptive_kl_controller(init_kl_coef: float, target: float, horizon: float) -> KLController:
  if target <= 0 or horizon <= 0:
    raise ValueError(f"kl controller: expected target > 0 and horizon > 0, found target={target}, horizon={horizon}")
  return KLController(value=jnp.asarray(init_kl_coef, jnp.float32), target=float(target), horizon=float(horizon))


def fixed_kl_controller(kl_coef: float) -> KLController:
  return KLController(value=jnp.asarray(kl_coef, jnp.float32))


def make_kl_controller(kind: str, init_kl_coef: float, target: float, horizon: float) -> KLController:
  """The controller named by `kind` (`KL_CONTROLLERS`); a fixed one ignores target and horizon."""
  if kind == "adaptive":
    return adaptive_kl_controller(init_kl_coef, target, horizon)
  if kind == "fixed":
    return fixed_kl_controller(init_kl_coef)
  raise ValueError(f"kl controller: expected one of {KL_CONTROLLERS}, found {kind!r}")


def update_kl_controller(controller: KLController, current_kl: jax.Array, n_steps: int | jax.Array
                         ) -> KLController:
  """The controller after a batch of ``n_steps`` sequences with mean sequence KL ``current_kl``."""
  if controller.target is None:
    return controller
  error = jnp.clip(current_kl / controller.target - 1, -PROPORTIONAL_ERROR_CLIP, PROPORTIONAL_ERROR_CLIP)
  multiplier = 1 + error * n_steps / controller.horizon
  return controller.replace(value=(controller.value * multiplier).astype(controller.value.dtype))
