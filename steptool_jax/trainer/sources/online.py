"""Online PPO batches: episodes the current policy plays in the built-in environment.

    arrays, stats = source.batch(epoch, index, policy_variables)

Global batch `index` of epoch `epoch` holds `batch.size / rollout.group_size` tasks of the
environment's train split (epoch e visits the tasks in the order of a permutation seeded by
(seed, e)), each played `group_size` times by the policy with these variables (sampling at
`rollout.temperature`), judged by the environment's rules and shaped into step-grained rows
(`steptool_jax.rollout.collect`). The sampling key is `fold_in(seed key, epoch, index)`, so the
batch is a pure function of (seed, epoch, index, policy): a resumed run, which restores the
same policy, collects exactly the batch an uninterrupted run would have.

Rows carry `group_ids` (the task's position in the batch) for the critic-free advantages;
`stats` are the rollouts' statistics (pass rate, failed calls, why actions stopped, ...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from steptool_jax.config.run import RunConfig
from steptool_jax.data.batching import bucket_length, length_buckets
from steptool_jax.envs.tasks import Task
from steptool_jax.models.config import LoraConfig, ModelConfig
from steptool_jax.models.generate import SamplingConfig
from steptool_jax.models.policy import Policy
from steptool_jax.parallel import sharding_context
from steptool_jax.rollout.collect import RolloutSettings, collect, rollout_settings_of, rollout_stats
from steptool_jax.rollout.policies import model_policy, width_buckets
from steptool_jax.rollout.stopping import ActionStops, action_stops
from steptool_jax.trainer import distributed
from steptool_jax.trainer.sources.batches import BEHAVIOUR_KEYS, ONLINE_KEYS, Batch, check_index, epoch_order
from steptool_jax.trainer.sources.offline import Collate, pad_id_of, step_grained_collate


@dataclasses.dataclass
class OnlineSource:
  """Rollouts of the current policy, `tasks_per_batch` tasks x `settings.group_size` rows."""

  tasks: Sequence[Task]
  tokenizer: Any
  model_config: ModelConfig
  lora: LoraConfig | None
  settings: RolloutSettings
  sampling: SamplingConfig
  stops: ActionStops
  batch_size: int
  seed: int
  buckets: tuple[int, ...]
  widths: tuple[int, ...]
  generation_batch: int
  reuse_cache: bool
  collate: Collate
  local_rows: slice
  counters: dict[str, Any] = dataclasses.field(default_factory=dict)
  keys: tuple[str, ...] = ONLINE_KEYS

  @property
  def tasks_per_batch(self) -> int:
    return self.batch_size // self.settings.group_size

  @property
  def num_rows(self) -> int:
    return len(self.tasks) * self.settings.group_size

  @property
  def steps_per_epoch(self) -> int:
    return math.ceil(len(self.tasks) / self.tasks_per_batch)

  def batch_tasks(self, epoch: int, index: int) -> list[Task]:
    order = epoch_order(self.seed, epoch, len(self.tasks))
    return [self.tasks[int(i)] for i in order[index * self.tasks_per_batch:(index + 1) * self.tasks_per_batch]]

  def batch(self, epoch: int, index: int, policy_variables: Mapping[str, Any]) -> tuple[Batch, dict[str, float]]:
    check_index(index, self.steps_per_epoch)
    # Several processes: each plays its rows on its own copy of the policy (distributed.py);
    # the width and the statistics are then agreed over all of them.
    variables, local_mesh = distributed.process_local_copy(dict(policy_variables))
    policy = Policy(config=self.model_config, variables=variables, lora=self.lora)
    # This process plays its rows of the grouped batch, all of them together (none: a
    # process past the end of a short last batch, whose rows are all padding).
    with sharding_context(local_mesh) if local_mesh is not None else contextlib.nullcontext():
      key = jax.random.fold_in(jax.random.fold_in(jax.random.key(self.seed), epoch), index)
      acting = model_policy(policy, self.tokenizer, self.stops, self.sampling, key, template=self.settings.template,
                            max_batch=self.generation_batch, widths=self.widths, reuse_cache=self.reuse_cache)
      collected = collect(self.batch_tasks(epoch, index), acting, self.tokenizer, self.settings, rows=self.local_rows)
    examples = list(collected.examples)
    longest = distributed.global_max(max((len(e["input_ids"]) for e in examples), default=1))
    width = bucket_length(longest, self.buckets)  # one width for the whole global batch
    rows = self.local_rows.stop - self.local_rows.start
    batch = self.collate(examples, width, rows)
    group_ids = np.full(rows, -1, np.int32)  # padding rows: a group of their own (no advantage)
    group_ids[:len(examples)] = [e["group_id"] for e in examples]
    batch["group_ids"] = group_ids
    if "behaviour_logp" in self.keys:  # aligned with input_ids; 0 off the actions and on padding
      logp = np.zeros((rows, width), np.float32)
      for i, example in enumerate(examples):
        logp[i, :len(example["behaviour_logp"])] = example["behaviour_logp"]
      batch["behaviour_logp"] = logp
    summaries = [s for part in distributed.allgather_json(collected.summaries()) for s in part]
    return batch, rollout_stats(summaries)


def make_online_source(config: RunConfig, tokenizer: Any, policy: Policy, *, local_rows: slice) -> OnlineSource:
  """The online source of a PPO run, playing with `policy`'s architecture (its variables come
  with every `batch` call); the model's EOS ids (Llama 3.1 has several) join the stops."""
  data, rollout = config.data, config.rollout
  tasks = config.env.tasks()["train"]
  sampling = SamplingConfig(max_new_tokens=data.max_response_len, temperature=rollout.temperature,
                            top_p=rollout.top_p, pad_id=tokenizer.pad_token_id or 0)
  max_len = data.max_context_len + data.max_response_len
  # Every action of an episode is a step: env.max_steps step slots fit every row.
  counters = {"source": "online", "tasks": len(tasks), "group_size": rollout.group_size,
              "max_steps": config.env.max_steps}
  return OnlineSource(
      tasks=tasks, tokenizer=tokenizer, model_config=policy.config, lora=policy.lora,
      settings=rollout_settings_of(data, config.env, tokenizer, group_size=rollout.group_size), sampling=sampling,
      stops=action_stops(tokenizer, data.template, policy.config.eos_token_ids), batch_size=config.batch.size,
      seed=config.seed, buckets=length_buckets(max_len, min_len=min(data.min_bucket_len, max_len)),
      widths=width_buckets(data.max_context_len, rollout.width_bucket),
      generation_batch=rollout.generation_batch or config.batch.size, reuse_cache=rollout.reuse_cache,
      collate=step_grained_collate(pad_id_of(tokenizer), config.env.max_steps), local_rows=local_rows,
      counters=counters, keys=BEHAVIOUR_KEYS if config.ppo.old_logp == "behaviour" else ONLINE_KEYS)
