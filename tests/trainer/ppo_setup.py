"""The PPO update the trainer tests run: tiny model, an 8-row batch, one mesh-aware jit.

Every row has 6 action tokens, so the mean over micro-batches of per-micro-batch token
means equals the token mean over the whole batch whichever rows a shuffle puts together,
and with `batch = minibatch x accumulation` each PPO epoch is one optimizer step on the
whole-batch loss: a recomputation needs no knowledge of the shuffle.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from steptool_jax.config import schema
from steptool_jax.config.run import RunConfig
from steptool_jax.parallel import make_mesh, replicated, sharding_context, spec_sharding
from steptool_jax.rl.kl_controller import adaptive_kl_controller
from steptool_jax.trainer.sources.batches import BATCH_AXES, STEP_GRAINED_KEYS
from steptool_jax.trainer.updates.ppo import make_ppo_update
from steptool_jax.trainer.state import create_train_state, state_shardings
from tests.models.tiny_models import TINY

GAMMA, LAM, CLIP, VALUE_CLIP, VF_COEF, KL_COEF, LR = 0.99, 0.95, 0.2, 0.2, 0.1, 0.3, 0.01
SETTINGS = schema.replace(
    RunConfig(), ppo__epochs=2, batch__size=8, batch__minibatch_size=4, batch__grad_accum_steps=2, ppo__gamma=GAMMA,
    ppo__lam=LAM, ppo__gae_mode="step", ppo__whiten_advantages=True, ppo__clip_eps=CLIP, ppo__value_clip=VALUE_CLIP,
    ppo__vf_coef=VF_COEF, reward__placement="paper", reward__kl_penalty="kl", model__logits_chunk=16)
REFERENCE_SHIFT = 1.05  # the reference copy is the initial weights x 1.05, so the KL is not zero

_ = -1
# Rows of 16 tokens, six action tokens each; rows end with their last action.
STEP_IDS = np.array([
    [_, _, _, _, 0, 0, 0, _, _, _, 1, 1, 1, _, _, _],
    [_, _, 0, 0, _, 1, 1, _, 2, 2, _, _, _, _, _, _],
    [_, _, _, 0, 0, 0, 0, 0, 0, _, _, _, _, _, _, _],
    [_, 0, _, 1, _, 2, _, 3, _, 4, _, 5, _, _, _, _],
], np.int32)
LENGTHS = np.array([13, 10, 9, 12])
NUM_STEPS = np.array([2, 3, 1, 6], np.int32)


def make_batch() -> dict[str, np.ndarray]:
  """8 rows: the four layouts above, twice, with different tokens and rewards."""
  rng = np.random.default_rng(7)
  step_ids = np.concatenate([STEP_IDS, STEP_IDS[::-1]])
  lengths = np.concatenate([LENGTHS, LENGTHS[::-1]])
  num_steps = np.concatenate([NUM_STEPS, NUM_STEPS[::-1]])
  attention = (np.arange(16)[None, :] < lengths[:, None]).astype(np.int32)
  ids = np.where(attention > 0, rng.integers(3, TINY.vocab_size, (8, 16)), 0).astype(np.int32)
  step_rewards = np.where(np.arange(6)[None, :] < num_steps[:, None], rng.random((8, 6)), 0).astype(np.float32)
  return {"input_ids": ids, "attention_mask": attention, "action_mask": (step_ids >= 0).astype(np.int32),
          "step_ids": step_ids, "step_rewards": step_rewards, "num_steps": num_steps}


def single_device_mesh():
  return make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])


def jitted_update(mesh, policy, *, tx, keys, lora=None, settings=SETTINGS, keep_reference=True,
                  batch_keys=STEP_GRAINED_KEYS, critic=None, critic_tx=None):
  """`(step, state)`: the update jitted as train.py jits it, and a fresh state on `mesh`
  (`critic`, `critic_tx`: a separate critic's starting variables and optimizer)."""
  update = make_ppo_update(TINY, lora, settings, tx, keys, critic_tx)
  create = lambda variables, rng, critic: create_train_state(
      variables, rng, critic, optimizer=tx, trainable_keys=keys, kl=adaptive_kl_controller(KL_COEF, 6.0, 10000.0),
      master_dtype=jnp.float32, keep_reference=keep_reference, critic_optimizer=critic_tx,
      normalize_rewards=settings.reward.normalize == "running")
  abstract = jax.eval_shape(create, policy.variables, jax.random.key(0), critic)
  shardings = state_shardings(abstract, model_config=TINY, lora=lora, mesh=mesh, optimizer=tx, trainable_keys=keys,
                              critic_optimizer=critic_tx)
  batch_shardings = {k: spec_sharding(BATCH_AXES[k], mesh) for k in batch_keys}
  with sharding_context(mesh):
    state = jax.jit(create, out_shardings=shardings)(policy.variables, jax.random.key(0), critic)
    if keep_reference:
      state = state.replace(reference=jax.tree.map(lambda x: x * REFERENCE_SHIFT, state.reference))
    jitted = jax.jit(update, in_shardings=(shardings, batch_shardings, replicated(mesh)),
                     out_shardings=(shardings, replicated(mesh)), donate_argnums=(0,))

  def step(state, batch, rng):
    with sharding_context(mesh):
      return jitted(state, jax.device_put(batch, batch_shardings), rng)

  return step, state


def sgd():
  return optax.sgd(LR)
