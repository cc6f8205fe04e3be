"""Online PPO batches: episodes the current policy plays in the built-in environment.

    source.batch(epoch, index, policy_variables) -> dict of numpy arrays

Global batch `index` of epoch `epoch` holds `batch.size / rollout.group_size` tasks of the
environment's train split (epoch e visits the tasks in the order of a permutation seeded by
(seed, e)), each played `group_size` times by the policy with these variables (sampling at
`rollout.temperature`), judged by the environment's rules and shaped into step-grained rows
(`steptool_jax.rollout`). The sampling key is `fold_in(seed key, epoch, index)`, so the batch
is a pure function of (seed, epoch, index, policy): a resumed run, which restores the same
policy, collects exactly the batch an uninterrupted run would have.

Rows carry `group_ids` (the task's position in the batch) for the critic-free advantages.
The statistics of the last collected batch (pass rate, failed calls, why actions stopped,
...) are `batch_stats()`; the loop logs them with the update they fed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from steptool_jax.data.batching import bucket_length, length_buckets
from steptool_jax.envs.tasks import Task
from steptool_jax.models.config import LoraConfig, ModelConfig
from steptool_jax.models.generate import SamplingConfig
from steptool_jax.models.policy import Policy
from steptool_jax.rollout.collect import RolloutSettings, collect
from steptool_jax.rollout.policies import model_policy, width_buckets
from steptool_jax.rollout.stopping import ActionStops, action_stops
from steptool_jax.trainer.env_data import generate_config

Batch = dict[str, np.ndarray]
Collate = Callable[[list[Mapping[str, Any]], int, int], Batch]


@dataclasses.dataclass
class OnlineSource:
  """Rollouts of the current policy, `tasks_per_batch` tasks x `settings.group_size` rows."""

  tasks: Sequence[Task]
  tokenizer: Any
  settings: RolloutSettings
  sampling: SamplingConfig
  stops: ActionStops
  template: str
  batch_size: int
  seed: int
  buckets: tuple[int, ...]
  widths: tuple[int, ...]
  generation_batch: int
  collate: Collate
  local_rows: slice
  counters: dict[str, Any] = dataclasses.field(default_factory=dict)
  model_config: ModelConfig | None = None
  lora: LoraConfig | None = None
  _stats: dict[str, float] = dataclasses.field(default_factory=dict)

  @property
  def tasks_per_batch(self) -> int:
    return self.batch_size // self.settings.group_size

  @property
  def num_rows(self) -> int:
    return len(self.tasks) * self.settings.group_size

  @property
  def steps_per_epoch(self) -> int:
    return math.ceil(len(self.tasks) / self.tasks_per_batch)

  def for_model(self, model_config: ModelConfig, lora: LoraConfig | None) -> "OnlineSource":
    """The source bound to the policy's architecture (known only once the policy is built);
    the model's EOS ids (Llama 3.1 has several) join the stops."""
    return dataclasses.replace(self, model_config=model_config, lora=lora,
                               stops=action_stops(self.tokenizer, self.template, model_config.eos_token_ids))

  def batch_tasks(self, epoch: int, index: int) -> list[Task]:
    order = np.random.default_rng([self.seed, epoch]).permutation(len(self.tasks))
    return [self.tasks[int(i)] for i in order[index * self.tasks_per_batch:(index + 1) * self.tasks_per_batch]]

  def batch(self, epoch: int, index: int, policy_variables: Mapping[str, Any] | None = None) -> Batch:
    if not 0 <= index < self.steps_per_epoch:
      raise IndexError(f"batch index {index} outside the {self.steps_per_epoch} batches of an epoch")
    if self.model_config is None or policy_variables is None:
      raise ValueError("online rollouts need the current policy: bind the model (for_model) and pass its variables")
    policy = Policy(config=self.model_config, variables=dict(policy_variables), lora=self.lora)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(self.seed), epoch), index)
    acting = model_policy(policy, self.tokenizer, self.stops, self.sampling, key, template=self.template,
                          max_batch=self.generation_batch, widths=self.widths)
    tasks = self.batch_tasks(epoch, index)
    local_tasks = [task for task in tasks for _ in range(self.settings.group_size)][self.local_rows]
    local_groups = [g for g in range(len(tasks)) for _ in range(self.settings.group_size)][self.local_rows]
    # One group at a time would waste the batch; collect plays the local rows together.
    collected = collect(local_tasks, acting, self.tokenizer, dataclasses.replace(self.settings, group_size=1))
    examples = [{**example, "group_id": group} for example, group in zip(collected.examples, local_groups)]
    self._stats = collected.stats()
    width = bucket_length(max(len(e["input_ids"]) for e in examples), self.buckets)
    rows = self.local_rows.stop - self.local_rows.start
    batch = self.collate(examples, width, rows)
    group_ids = np.full(rows, -1, np.int32)  # padding rows: a group of their own (no advantage)
    group_ids[:len(examples)] = [e["group_id"] for e in examples]
    batch["group_ids"] = group_ids
    return batch

  def batch_stats(self) -> dict[str, float]:
    """Statistics of the most recently collected batch."""
    return dict(self._stats)


def make_online_source(config: ml_collections.ConfigDict, tokenizer: Any, *, collate: Collate,
                       local_rows: slice) -> OnlineSource:
  """The online source of a PPO run (bind the model with `for_model` before the first batch)."""
  data, rollout = config.data, config.rollout
  environment = generate_config(config)
  tasks = environment.tasks()["train"]
  bos_id = None
  if data.add_bos:
    bos_id = tokenizer.bos_token_id
    if bos_id is None:
      raise ValueError("data.add_bos: the tokenizer has no BOS token; set data.add_bos=False")
  settings = RolloutSettings(bos_id=bos_id, max_context_len=data.max_context_len,
                             max_response_len=data.max_response_len, group_size=rollout.group_size,
                             env=environment.env_config, contribution=environment.contribution,
                             alpha=environment.alpha, threshold=environment.threshold,
                             unfinished_reward=environment.unfinished_reward)
  sampling = SamplingConfig(max_new_tokens=data.max_response_len, temperature=rollout.temperature,
                            top_p=rollout.top_p, pad_id=tokenizer.pad_token_id or 0)
  max_len = data.max_context_len + data.max_response_len
  # Every action of an episode is a step: data.env.max_steps step slots fit every row.
  counters = {"source": "online", "tasks": len(tasks), "group_size": rollout.group_size,
              "max_steps": environment.max_steps}
  return OnlineSource(
      tasks=tasks, tokenizer=tokenizer, settings=settings, sampling=sampling,
      stops=action_stops(tokenizer, data.template), template=data.template, batch_size=config.batch.size,
      seed=config.seed, buckets=length_buckets(max_len, min_len=min(data.min_bucket_len, max_len)),
      widths=width_buckets(data.max_context_len, rollout.width_bucket),
      generation_batch=rollout.generation_batch or config.batch.size, collate=collate, local_rows=local_rows,
      counters=counters)
