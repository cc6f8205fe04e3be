"""One PPO update on a (data 2, fsdp 2, tensor 2) mesh of 8 fake CPU devices equals the
same update on one device.

Tolerance: parameters after the update (two PPO epochs, SGD lr 0.01) agree to atol 2e-5,
rtol 1e-4; metrics to rtol 1e-4. The sharded program sums in a different order (partial
sums per shard, then all-reduces), so float32 results differ in the last bits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from steptool_jax.parallel import make_mesh
from tests.models.tiny_models import tiny_policy
from tests.trainer.fixtures import compile_cache  # noqa: F401 (fixture)
from tests.trainer.ppo_setup import jitted_update, make_batch, sgd, single_device_mesh

pytestmark = pytest.mark.usefixtures("compile_cache")

KEYS = ("params", "value_head")


def test_sharded_update_equals_single_device():
  results = {}
  for name, mesh in (("sharded", make_mesh({"data": 2, "fsdp": 2, "tensor": 2})), ("single", single_device_mesh())):
    step, state = jitted_update(mesh, tiny_policy(), tx=sgd(), keys=KEYS)
    results[name] = step(state, make_batch(), jax.random.key(1))
  (sharded, sharded_metrics), (single, single_metrics) = results["sharded"], results["single"]

  q = sharded.policy["params"]["layers"]["self_attn"]["q_proj"]["kernel"]
  assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
  assert len(q.sharding.device_set) == 8
  moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), single.policy["params"],
                       tiny_policy().variables["params"])
  assert max(jax.tree.leaves(moved)) > 1e-4  # the update moved the weights: the comparison means something
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5, rtol=1e-4),
               sharded.policy, single.policy)
  np.testing.assert_allclose(sharded.kl.value, single.kl.value, rtol=1e-6)
  for name in ("loss", "policy_loss", "value_loss", "kl", "grad_norm", "reward/score", "advantages/mean",
               "clip_fraction"):
    np.testing.assert_allclose(sharded_metrics[name], single_metrics[name], rtol=1e-4, atol=1e-5, err_msg=name)
