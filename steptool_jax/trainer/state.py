"""The train state: a pytree of everything a step reads and writes, and its shardings.

    TrainState(step, policy, opt_state, kl, rng, reference, critic, critic_opt_state, reward_stats)

`policy` is the policy's variables dict (`{"params", "lora"?, "value_head"}`, the layout of
docs/models.md); the optimizer state covers only its trainable collections
(the algorithm's `trainable_collections`). `reference` is a frozen copy of the initial base
weights when training without LoRA (with LoRA the reference policy is the same weights with
the adapters switched off, and `reference` is None). `kl` is the KL controller (PPO);
`rng` the run's base key as raw key data, so it checkpoints as a plain uint32 array.

Trainable collections are held in `model.master_dtype` (float32 by default) whatever the
dtype of the frozen base, so bf16 runs keep float32 adapters and Adam moments.

`critic` is a separate critic's variables (`ppo.critic = "separate"`: under LoRA its own
adapters and value head over the policy's frozen base, `{"lora", "value_head"}`; without
LoRA a full copy, `{"params", "value_head"}`), all trained, with its own optimizer state
`critic_opt_state`; both None with the shared value head. `reward_stats` holds the running
moments of the returns when `reward.normalize = "running"`, else None.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from steptool_jax.models.config import LoraConfig, ModelConfig
from steptool_jax.models.pretrained import variable_shardings
from steptool_jax.parallel.sharding import replicated
from steptool_jax.rl.kl_controller import KLController
from steptool_jax.rl.normalize import RunningMoments, initial_moments

Variables = dict[str, Any]


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 []: updates done so far
  policy: Variables
  opt_state: optax.OptState
  kl: KLController
  rng: jax.Array  # uint32 key data of the run's base key
  reference: Any = None  # frozen base params (training without LoRA), else None
  critic: Any = None  # a separate critic's variables, else None
  critic_opt_state: Any = None
  reward_stats: RunningMoments | None = None  # running reward normalisation, else None


def split_trainable(policy: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[Variables, Variables]:
  """`(trainable, frozen)` collections of a policy variables dict."""
  return ({k: v for k, v in policy.items() if k in keys}, {k: v for k, v in policy.items() if k not in keys})


def create_train_state(policy: Mapping[str, Any], rng: jax.Array, critic: Mapping[str, Any] | None = None, *,
                       optimizer: optax.GradientTransformation, trainable_keys: tuple[str, ...], kl: KLController,
                       master_dtype: Any, keep_reference: bool,
                       critic_optimizer: optax.GradientTransformation | None = None,
                       normalize_rewards: bool = False) -> TrainState:
  """A fresh state at step 0 (jit it with `out_shardings=state_shardings(...)`); `critic` is a
  separate critic's starting variables (`policy_init.initial_critic`), trained by `critic_optimizer`."""
  trainable, frozen = split_trainable(policy, trainable_keys)
  trainable = jax.tree.map(lambda x: x.astype(master_dtype), trainable)
  # A real copy: the policy's params will be updated (and donated), the reference must not.
  reference = jax.tree.map(jnp.copy, policy["params"]) if keep_reference else None
  critic_opt_state = None
  if critic is not None:
    critic = jax.tree.map(lambda x: jnp.copy(x).astype(master_dtype), dict(critic))
    critic_opt_state = critic_optimizer.init(critic)
  return TrainState(step=jnp.zeros((), jnp.int32), policy={**frozen, **trainable},
                    opt_state=optimizer.init(trainable), kl=kl, rng=jax.random.key_data(rng),
                    reference=reference, critic=critic, critic_opt_state=critic_opt_state,
                    reward_stats=initial_moments() if normalize_rewards else None)


def state_shardings(abstract_state: TrainState, *, model_config: ModelConfig, lora: LoraConfig | None,
                    mesh: Mesh, optimizer: optax.GradientTransformation, trainable_keys: tuple[str, ...],
                    critic_optimizer: optax.GradientTransformation | None = None) -> TrainState:
  """`NamedSharding`s for every leaf: policy, reference and critic from the model's logical
  axes, optimizer moments like the parameters they belong to, scalars replicated."""
  variables = variable_shardings(model_config, lora, mesh)
  whole = replicated(mesh)

  def moments(tx: optax.GradientTransformation, state: Any, params: Any) -> Any:
    return optax.tree_map_params(tx, lambda _, sharding: sharding, state, params,
                                 transform_non_params=lambda _: whole)

  policy = {k: variables[k] for k in abstract_state.policy}
  critic = critic_opt_state = None
  if abstract_state.critic is not None:
    critic = {k: variables[k] for k in abstract_state.critic}
    critic_opt_state = moments(critic_optimizer, abstract_state.critic_opt_state, critic)
  return TrainState(
      step=whole, policy=policy,
      opt_state=moments(optimizer, abstract_state.opt_state, {k: policy[k] for k in trainable_keys}),
      kl=jax.tree.map(lambda _: whole, abstract_state.kl), rng=whole,
      reference=None if abstract_state.reference is None else variables["params"],
      critic=critic, critic_opt_state=critic_opt_state,
      reward_stats=None if abstract_state.reward_stats is None else jax.tree.map(lambda _: whole,
                                                                                  abstract_state.reward_stats))
