"""The train state: a pytree of everything a step reads and writes, and its shardings.

    TrainState(step, policy, opt_state, kl, rng, reference)

`policy` is the policy's variables dict (`{"params", "lora"?, "value_head"}`, the layout of
docs/models.md); the optimizer state covers only its trainable collections
(the algorithm's `trainable_collections`). `reference` is a frozen copy of the initial base
weights when training without LoRA (with LoRA the reference policy is the same weights with
the adapters switched off, and `reference` is None). `kl` is the KL controller (PPO);
`rng` the run's base key as raw key data, so it checkpoints as a plain uint32 array.

Trainable collections are held in `model.master_dtype` (float32 by default) whatever the
dtype of the frozen base, so bf16 runs keep float32 adapters and Adam moments.
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

Variables = dict[str, Any]


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 []: updates done so far
  policy: Variables
  opt_state: optax.OptState
  kl: KLController
  rng: jax.Array  # uint32 key data of the run's base key
  reference: Any = None  # frozen base params (training without LoRA), else None


def split_trainable(policy: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[Variables, Variables]:
  """`(trainable, frozen)` collections of a policy variables dict."""
  return ({k: v for k, v in policy.items() if k in keys}, {k: v for k, v in policy.items() if k not in keys})


def create_train_state(policy: Mapping[str, Any], rng: jax.Array, *, optimizer: optax.GradientTransformation,
                       trainable_keys: tuple[str, ...], kl: KLController, master_dtype: Any,
                       keep_reference: bool) -> TrainState:
  """A fresh state at step 0 (jit it with `out_shardings=state_shardings(...)`)."""
  trainable, frozen = split_trainable(policy, trainable_keys)
  trainable = jax.tree.map(lambda x: x.astype(master_dtype), trainable)
  # A real copy: the policy's params will be updated (and donated), the reference must not.
  reference = jax.tree.map(jnp.copy, policy["params"]) if keep_reference else None
  return TrainState(step=jnp.zeros((), jnp.int32), policy={**frozen, **trainable},
                    opt_state=optimizer.init(trainable), kl=kl, rng=jax.random.key_data(rng),
                    reference=reference)


def state_shardings(abstract_state: TrainState, *, model_config: ModelConfig, lora: LoraConfig | None,
                    mesh: Mesh, optimizer: optax.GradientTransformation,
                    trainable_keys: tuple[str, ...]) -> TrainState:
  """`NamedSharding`s for every leaf: policy and reference from the model's logical axes,
  optimizer moments like the parameters they belong to, scalars replicated."""
  variables = variable_shardings(model_config, lora, mesh)
  policy = {k: variables[k] for k in abstract_state.policy}
  trainable = {k: policy[k] for k in trainable_keys}
  opt_state = optax.tree_map_params(optimizer, lambda _, sharding: sharding, abstract_state.opt_state, trainable,
                                    transform_non_params=lambda _: replicated(mesh))
  whole = replicated(mesh)
  return TrainState(step=whole, policy=policy, opt_state=opt_state,
                    kl=jax.tree.map(lambda _: whole, abstract_state.kl), rng=whole,
                    reference=None if abstract_state.reference is None else variables["params"])
