"""The ablation switches change exactly the tensors they should, through the update's own
`advantages` stage, on a hand-made batch with the numbers written out.

| method | reward.placement | ppo.gae_mode |
|---|---|---|
| StepTool | paper | step |
| without step-grained reward | final_only | step |
| without step-grained optimisation | summed | token |
| PPO with the final reward | final_only | token |
"""

from __future__ import annotations

import types

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import steptool_vs_baselines
from steptool_jax.config.run import parse_run_config
from steptool_jax.rl.gae import compute_gae
from steptool_jax.rl.kl import kl_penalty
from steptool_jax.rl.kl_controller import fixed_kl_controller
from steptool_jax.trainer.updates.advantages import RolloutStats
from steptool_jax.trainer.updates.ppo import make_ppo_stages
from tests.models.tiny_models import TINY

_ = -1
# Two rows: 3 steps (tokens 1-2, 4, 6-7) and 2 steps (tokens 2-3, 5); observations between.
STEP_IDS = np.array([[_, 0, 0, _, 1, _, 2, 2],
                     [_, _, 0, 0, _, 1, _, _]], np.int32)
STEP_REWARDS = np.array([[0.5, 1.0, 1.0], [0.0, 0.5, 0.0]], np.float32)
NUM_STEPS = np.array([3, 2], np.int32)
ACTION = (STEP_IDS >= 0).astype(np.int32)
BATCH = {"input_ids": np.ones((2, 8), np.int32), "attention_mask": np.array([[1] * 8, [1] * 6 + [0, 0]], np.int32),
         "action_mask": ACTION, "step_ids": STEP_IDS, "step_rewards": STEP_REWARDS, "num_steps": NUM_STEPS,
         "group_ids": np.array([0, 0], np.int32)}
VALUES = np.linspace(0.1, 0.8, 16, dtype=np.float32).reshape(2, 8) * ACTION
LOGP = np.full((2, 8), -1.0, np.float32)

# Token rewards by hand (KL 0: the policy is its reference).
STEP_TOOL = [[0, 0, 0.5, 0, 1.0, 0, 0, 1.0], [0, 0, 0, 0.0, 0, 0.5, 0, 0]]
FINAL_ONLY = [[0, 0, 0, 0, 0, 0, 0, 1.0], [0, 0, 0, 0, 0, 0.5, 0, 0]]
SUMMED = [[0, 0, 0, 0, 0, 0, 0, 2.5], [0, 0, 0, 0, 0, 0.5, 0, 0]]


def stage_outputs(placement: str, gae_mode: str, estimator: str = "gae") -> dict[str, np.ndarray]:
  config = steptool_vs_baselines.get_config("steptool")
  config.reward.placement = placement
  config.ppo.gae_mode = gae_mode
  config.ppo.advantage_estimator = estimator
  if estimator == "group":  # what a critic-free config must say (checked by the config)
    config.rollout.group_size, config.ppo.vf_coef = 2, 0.0
  stages = make_ppo_stages(TINY, None, parse_run_config(config), optax.sgd(0.1), ("params", "value_head"))
  state = types.SimpleNamespace(kl=fixed_kl_controller(0.2))
  stats = RolloutStats(old_logp=LOGP, old_values=VALUES, ref_logp=LOGP, kl=kl_penalty(LOGP, LOGP, "kl"))
  out = stages.advantages(state, {k: jnp.asarray(v) for k, v in BATCH.items()}, stats)._asdict()
  out.pop("loss_inputs")
  return {k: np.asarray(v) for k, v in out.items()}


@pytest.mark.parametrize("method, rewards, gae_mode", [
    ("steptool", STEP_TOOL, "step"),
    ("no_step_reward", FINAL_ONLY, "step"),
    ("no_step_optimisation", SUMMED, "token"),
    ("ppo_final", FINAL_ONLY, "token"),
])
def test_each_method_places_its_rewards_and_runs_its_gae(method, rewards, gae_mode):
  config = steptool_vs_baselines.get_config(method)
  out = stage_outputs(config.reward.placement, config.ppo.gae_mode)
  assert config.ppo.gae_mode == gae_mode
  np.testing.assert_allclose(out["rewards"], rewards, atol=1e-7)
  expected, returns = compute_gae(jnp.asarray(rewards, jnp.float32), VALUES, ACTION, gamma=config.ppo.gamma,
                                  lam=config.ppo.lam, mode=gae_mode)
  np.testing.assert_allclose(out["advantages"], expected, atol=1e-6)
  np.testing.assert_allclose(out["returns"], returns, atol=1e-6)


def test_the_switches_are_independent():
  """The placement changes the rewards only; the GAE mode changes the advantages only."""
  step_step, step_token = stage_outputs("paper", "step"), stage_outputs("paper", "token")
  final_step = stage_outputs("final_only", "step")
  np.testing.assert_array_equal(step_step["rewards"], step_token["rewards"])
  assert not np.allclose(step_step["advantages"], step_token["advantages"])
  assert not np.allclose(step_step["rewards"], final_step["rewards"])
  # Only the last action token of each row carries a final-only reward.
  assert np.count_nonzero(final_step["rewards"][0]) == 1 and final_step["rewards"][0, 7] == 1.0


def test_methods_differ_in_nothing_but_their_switches():
  configs = {m: steptool_vs_baselines.get_config(m) for m in steptool_vs_baselines.METHODS}
  flat = {m: c.to_dict() for m, c in configs.items()}
  for m, c in flat.items():
    for section, fields in c.items():
      for name, value in (fields.items() if isinstance(fields, dict) else [(None, fields)]):
        if (section, name) in (("reward", "placement"), ("ppo", "gae_mode")):
          continue
        assert value == (flat["steptool"][section][name] if name else flat["steptool"][section]), (m, section, name)


def test_critic_free_group_advantages_by_hand():
  """Two rollouts of one task; returns-to-go (gamma 1) of the step rewards:
  row 0: 2.5, 2.0, 1.0; row 1: 0.5, 0.5. Pooled over the group: mean 1.3, population
  std sqrt((1.2^2 + 0.7^2 + 0.3^2 + 0.8^2 + 0.8^2) / 5) = sqrt(0.66)."""
  out = stage_outputs("paper", "step", estimator="group")
  std = np.sqrt(0.66)
  row0 = (np.array([2.5, 2.0, 1.0]) - 1.3) / std
  row1 = (np.array([0.5, 0.5]) - 1.3) / std
  expected = np.zeros((2, 8), np.float32)
  expected[0, [1, 2]], expected[0, 4], expected[0, [6, 7]] = row0[0], row0[1], row0[2]
  expected[1, [2, 3]], expected[1, 5] = row1[0], row1[1]
  np.testing.assert_allclose(out["used_advantages"], expected, atol=1e-5)
  assert not out["returns"].any()
  # Final-only critic-free: the return-to-go of every step is the final reward.
  final = stage_outputs("final_only", "step", estimator="group")
  returns = np.array([1.0, 1.0, 1.0, 0.5, 0.5])  # row 0's 3 steps, row 1's 2
  z = (returns - returns.mean()) / returns.std()
  np.testing.assert_allclose(final["used_advantages"][0, [1, 4, 6]], z[:3], atol=1e-5)
  np.testing.assert_allclose(final["used_advantages"][1, [2, 5]], z[3:], atol=1e-5)


def test_every_expert_action_of_the_experiment_fits_its_response_length():
  """The longest answer of the experiment's tasks (rain_total, 95-99 tokens) plus EOS must fit
  data.max_response_len: runs 1-4 of docs/results.md used 96 and cut about half of them, so
  the SFT policy never learned to end those answers and rollouts could not complete them."""
  from steptool_jax.envs.builtin_tokenizer import load_tokenizer
  from steptool_jax.envs.generate import roll_out
  from steptool_jax.trainer.sources.env_data import generate_config

  config = parse_run_config(steptool_vs_baselines.get_config("sft"))
  environment = generate_config(config)
  tokenizer = load_tokenizer()
  examples = roll_out(environment.tasks()["train"], environment)
  lengths = [len(tokenizer.encode(action, add_special_tokens=False)) + 1  # + EOS
             for example in examples for action in example.run.episode.actions]
  assert len(lengths) > 500 and max(lengths) > 96  # the long answers are there
  assert max(lengths) <= config.data.max_response_len
