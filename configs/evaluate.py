"""Evaluation of a policy on a task split of the built-in environment.

    python -m steptool_jax.evaluate --config=configs/evaluate.py --config.policy.path=/ckpt/hf_dir
    python -m steptool_jax.evaluate --config=configs/evaluate.py:expert      # the scripted expert
    python -m steptool_jax.evaluate --config=configs/evaluate.py:give_up     # a floor

Variants (`:name`) pick the policy kind; any field can be overridden with
`--config.a.b=value`. The task split is `generate_tasks(env.num_tasks, env.seed)[eval.split]`:
use the `num_tasks` and `seed` the training data was generated with, so the splits are the
same ones (tasks are disjoint across splits only within one call), or point
`env.tasks_file` at the `tasks/{split}.jsonl` written with the data.
"""

from __future__ import annotations

import ml_collections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  config.policy = ml_collections.ConfigDict()
  # hf: a Hugging Face directory (ours via export, or any Llama-family model);
  # checkpoint: a run directory of ours (python -m steptool_jax.train / sft --workdir): its
  #   latest policy, adapters merged; the tokenizer, data.* and env.* come from that run's config;
  # random: a randomly initialised `model_preset` (a floor, and smoke tests);
  # expert / give_up: scripted references with known outcomes.
  config.policy.kind = "hf"
  config.policy.path = ""
  config.policy.model_preset = "tiny"
  config.policy.expert_mistake_rate = 0.0
  config.policy.seed = 0  # random init, and the expert's mistakes

  config.tokenizer = ""  # "" or "builtin" = the built-in tokenizer (kind=hf: the model directory's own, if it has one)

  config.env = ml_collections.ConfigDict()
  config.env.num_tasks = 1000
  config.env.seed = 0
  config.env.tasks_file = ""  # a tasks/{split}.jsonl; overrides num_tasks/seed
  config.env.max_steps = 10
  config.env.template = "toolllama"
  # The task mix and text (as data.env.* of a training config; see envs.generate.GenerateConfig).
  config.env.templates = ""
  config.env.hold_out_templates = True
  config.env.test_entities = "unseen"
  config.env.validation_fraction = 0.1
  config.env.test_fraction = 0.1
  config.env.quote_entities = False
  config.env.tool_descriptions = True
  config.env.contribution = "answer_overlap"  # step rewards written to episodes.jsonl
  config.env.alpha = 1.0
  config.env.unfinished_reward = 0.0

  # Must match the data pipeline the policy was trained with.
  config.data = ml_collections.ConfigDict()
  config.data.max_context_len = 1024
  config.data.max_response_len = 128  # also the most tokens generated per action
  config.data.add_bos = True
  config.data.eos_after_actions = True

  config.eval = ml_collections.ConfigDict()
  config.eval.split = "validation"
  config.eval.max_episodes = 0  # 0 = every task of the split
  config.eval.batch_size = 32
  config.eval.temperature = 0.0  # greedy
  config.eval.top_p = 1.0
  config.eval.seed = 0
  config.eval.width_bucket = 128  # prompts are left-padded to a multiple of this (fewer compiles)

  config.output_dir = ""  # "" = print only; else answers.json, episodes.jsonl, metrics.json there

  if variant in ("expert", "give_up", "random"):
    config.policy.kind = variant
  elif variant:
    raise ValueError(f"configs/evaluate.py: unknown variant {variant!r}; expected one of expert, give_up, random")
  return config
