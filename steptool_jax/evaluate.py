"""`python -m steptool_jax.evaluate`: a policy on a task split of the built-in environment.

    python -m steptool_jax.evaluate --config=configs/evaluate.py --config.policy.path=/ckpt/hf_dir \\
        --config.eval.split=test --config.output_dir=/tmp/eval

Plays one episode per task with KV-cache generation (greedy by default), all episodes in
lock-step batches, judges each by rules and reports, with 95% confidence intervals:

- pass rate: mean IsSolved (Solved 1, Unsure 0.5, Unsolved 0), as the paper's evaluation;
- solved rate (share Solved), tool recall (relevant tools called / relevant tools),
  average steps per episode, failed-call rate (failed intermediate calls / calls);
- the same per generalization group and per template.

With `output_dir` it writes `answers.json` (the trajectories as ToolBench converted answers,
for external evaluators), `episodes.jsonl` (per-task verdicts) and `metrics.json`. The last
line of standard output is one JSON object with at least `pass_rate`, `tool_recall`,
`episodes` and `split`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time
from typing import Any, Sequence

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from steptool_jax.cli import parse_flags
from steptool_jax.data.records import FINISH, ToolCall, Trajectory
from steptool_jax.data.toolbench import write_converted_answers
from steptool_jax.envs import episode as env
from steptool_jax.envs import judge
from steptool_jax.envs.builtin_tokenizer import load_tokenizer
from steptool_jax.envs.expert import Mistakes
from steptool_jax.envs.tasks import SPLITS, Task, generate_tasks
from steptool_jax.models.generate import SamplingConfig
from steptool_jax.models.policy import Policy
from steptool_jax.rollout import metrics as metrics_lib
from steptool_jax.rollout.collect import RolloutSettings
from steptool_jax.rollout.episodes import Rollout, run_episodes
from steptool_jax.rollout.policies import ActionPolicy, model_policy, text_policy, width_buckets
from steptool_jax.rollout.scripted import expert_writer, give_up_writer
from steptool_jax.rollout.stopping import action_stops
from steptool_jax.trainer.env_data import template_names

MODEL_KINDS = ("hf", "checkpoint", "random")
SCRIPTED_KINDS = ("expert", "give_up")
# The environment fields a run's config (data.env.*) hands to the evaluation config (env.*).
ENV_FIELDS = ("num_tasks", "seed", "max_steps", "templates", "hold_out_templates", "test_entities",
              "validation_fraction", "test_fraction", "quote_entities", "tool_descriptions", "contribution",
              "alpha", "unfinished_reward")
HEADLINE = ("pass_rate", "solved_rate", "tool_recall", "steps", "failed_call_rate")


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """Rollouts, their verdicts, and the metrics (`rollout.metrics.evaluation_metrics`)."""

  rollouts: tuple[Rollout, ...]
  judgements: tuple[judge.Judgement, ...]
  metrics: dict[str, Any]

  def summary(self, split: str) -> dict[str, Any]:
    """The one-line result: each headline metric's mean and its CI, the counts."""
    out: dict[str, Any] = {"split": split, "episodes": self.metrics["episodes"]}
    for name in HEADLINE:
      estimate = self.metrics[name]
      out[name] = estimate["mean"]
      out[f"{name}_ci"] = [estimate["ci_low"], estimate["ci_high"]]
    out["status_counts"] = self.metrics["status_counts"]
    out["pass_rate_by_generalization"] = {g: m["pass_rate"]["mean"]
                                          for g, m in self.metrics["by_generalization"].items()}
    return out


def evaluate_policy(tasks: Sequence[Task], policy: ActionPolicy, tokenizer: Any,
                    settings: RolloutSettings) -> Evaluation:
  """One episode per task, judged by rules (`settings.group_size` is ignored)."""
  rollouts = tuple(run_episodes(tasks, policy, tokenizer, bos_id=settings.bos_id,
                                max_context_len=settings.max_context_len, env_config=settings.env))
  judgements = tuple(settings.judgement(r) for r in rollouts)
  scores = [metrics_lib.EpisodeScore.from_judgement(j, template=r.task.template, steps=r.num_steps)
            for r, j in zip(rollouts, judgements)]
  return Evaluation(rollouts=rollouts, judgements=judgements, metrics=metrics_lib.evaluation_metrics(scores))


# -- building the pieces from the config ------------------------------------------------------


def load_tasks(config: ml_collections.ConfigDict) -> list[Task]:
  """The evaluated tasks: the split (from a tasks file or regenerated), capped at max_episodes."""
  split = config.eval.split
  if split not in SPLITS:
    raise ValueError(f"eval.split: expected one of {', '.join(SPLITS)}, found {split!r}")
  if config.env.tasks_file:
    with open(config.env.tasks_file, encoding="utf-8") as f:
      tasks = [Task.from_json(json.loads(line)) for line in f if line.strip()]
  else:
    tasks = list(generate_tasks(config.env.num_tasks, config.env.seed, quote_entities=config.env.quote_entities,
                                templates=template_names(config.env.templates) or None,
                                hold_out_templates=config.env.hold_out_templates,
                                test_entities=config.env.test_entities,
                                validation_fraction=config.env.validation_fraction,
                                test_fraction=config.env.test_fraction)[split])
  if config.eval.max_episodes < 0:
    raise ValueError(f"eval.max_episodes: expected >= 0 (0 = all), found {config.eval.max_episodes}")
  return tasks[:config.eval.max_episodes] if config.eval.max_episodes else tasks


def with_run_settings(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """For `policy.kind=checkpoint` (one of our run directories): the tokenizer, the data
  pipeline's settings and the environment's split settings of that run, as saved with its
  checkpoint, replace the evaluation config's, so the policy acts on the tokens it was
  trained on. Other kinds: the config as it is."""
  if config.policy.kind != "checkpoint":
    return config
  if not config.policy.path:
    raise ValueError("policy.path: required for policy.kind='checkpoint' (a run directory of ours)")
  from steptool_jax.trainer import policy_init  # noqa: PLC0415
  trained = policy_init.run_config(config.policy.path)
  config = ml_collections.ConfigDict(config.to_dict())  # an unlocked copy
  config.tokenizer = trained.tokenizer or trained.model.path
  for name in ("max_context_len", "max_response_len", "add_bos", "eos_after_actions"):
    config.data[name] = trained.data[name]
  config.env.template = trained.data.template
  for name in ENV_FIELDS:
    if name in trained.data.env:  # runs saved before a field existed keep the default
      config.env[name] = trained.data.env[name]
  return config


def load_policy_tokenizer(config: ml_collections.ConfigDict) -> Any:
  """`tokenizer`: "" or "builtin" for the built-in one, else a directory; with kind=hf and
  no tokenizer named, the model directory's own when it has one."""
  name = config.tokenizer
  path = pathlib.Path(config.policy.path) if config.policy.path else None
  if not name and config.policy.kind == "hf" and path is not None and (path / "tokenizer_config.json").is_file():
    name = str(path)
  if not name or name == "builtin":
    return load_tokenizer()
  from transformers import AutoTokenizer  # noqa: PLC0415 (slow import, only for real models)
  return AutoTokenizer.from_pretrained(name, local_files_only=True)


def load_model(config: ml_collections.ConfigDict, tokenizer: Any) -> Policy:
  """The policy a `hf`, `checkpoint` or `random` config describes."""
  from steptool_jax.models.config import preset  # noqa: PLC0415
  from steptool_jax.models.policy import init_policy  # noqa: PLC0415
  from steptool_jax.models.pretrained import load_pretrained  # noqa: PLC0415
  kind, path = config.policy.kind, config.policy.path
  if kind == "random":
    model_config = preset(config.policy.model_preset, vocab_size=len(tokenizer))
    return init_policy(model_config, jax.random.key(config.policy.seed), with_value_head=False)
  if not path:
    raise ValueError(f"policy.path: required for policy.kind={kind!r}")
  if kind == "hf":
    return load_pretrained(path, with_value_head=False)
  from steptool_jax.parallel import make_mesh  # noqa: PLC0415
  from steptool_jax.trainer import policy_init  # noqa: PLC0415
  mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  return policy_init.policy_of_run(path, len(tokenizer), mesh)


def rollout_settings(config: ml_collections.ConfigDict, tokenizer: Any) -> RolloutSettings:
  bos_id = None
  if config.data.add_bos:
    bos_id = tokenizer.bos_token_id
    if bos_id is None:
      raise ValueError("data.add_bos: the tokenizer has no BOS token; set data.add_bos=False")
  return RolloutSettings(
      bos_id=bos_id, max_context_len=config.data.max_context_len, max_response_len=config.data.max_response_len,
      env=env.EnvConfig(max_steps=config.env.max_steps, template=config.env.template,
                        tool_descriptions=config.env.tool_descriptions),
      contribution=config.env.contribution, alpha=config.env.alpha, unfinished_reward=config.env.unfinished_reward)


def build_policy(config: ml_collections.ConfigDict, tokenizer: Any, policy: Policy | None = None) -> ActionPolicy:
  """The acting policy: scripted, or `policy` (loaded from the config when None) generating."""
  kind = config.policy.kind
  eos_id = tokenizer.eos_token_id if config.data.eos_after_actions else None
  if kind == "expert":
    return text_policy(expert_writer(Mistakes(rate=config.policy.expert_mistake_rate), seed=config.policy.seed),
                       tokenizer, eos_id=eos_id)
  if kind == "give_up":
    return text_policy(give_up_writer(), tokenizer, eos_id=eos_id)
  if kind not in MODEL_KINDS:
    raise ValueError(f"policy.kind: expected one of {', '.join(MODEL_KINDS + SCRIPTED_KINDS)}, found {kind!r}")
  policy = policy if policy is not None else load_model(config, tokenizer)
  needed = config.data.max_context_len + config.data.max_response_len
  if needed > policy.config.max_position_embeddings:
    raise ValueError(f"data.max_context_len + data.max_response_len = {needed} exceeds the model's "
                     f"max_position_embeddings ({policy.config.max_position_embeddings})")
  sampling = SamplingConfig(max_new_tokens=config.data.max_response_len, temperature=config.eval.temperature,
                            top_p=config.eval.top_p, pad_id=tokenizer.pad_token_id or 0)
  stops = action_stops(tokenizer, config.env.template, policy.config.eos_token_ids)
  return model_policy(policy, tokenizer, stops, sampling, jax.random.key(config.eval.seed),
                      template=config.env.template, max_batch=config.eval.batch_size,
                      widths=width_buckets(config.data.max_context_len, config.eval.width_bucket))


# Names written for intermediate calls that have none a reader accepts: an action without a
# function name, and a rejected Finish (only the accepted Finish may be a `Finish` node).
UNNAMED_CALL = "invalid_action"
REJECTED_FINISH = "invalid_finish"


def answer_trajectory(trajectory: Trajectory) -> Trajectory:
  """The trajectory as written to `answers.json`: what the agent did, with the two kinds of
  failed call the converted-answer format cannot name renamed (their error responses stay)."""
  def renamed(call: ToolCall) -> ToolCall:
    if not call.name.strip():
      return dataclasses.replace(call, name=UNNAMED_CALL)
    if call.name == FINISH:
      return dataclasses.replace(call, name=REJECTED_FINISH)
    return call
  return dataclasses.replace(trajectory, calls=tuple(renamed(call) for call in trajectory.calls))


def write_outputs(output_dir: str | pathlib.Path, evaluation: Evaluation, summary: dict[str, Any]) -> None:
  out = pathlib.Path(output_dir)
  out.mkdir(parents=True, exist_ok=True)
  write_converted_answers(out / "answers.json", (answer_trajectory(r.episode.trajectory()) for r in evaluation.rollouts))
  with open(out / "episodes.jsonl", "w", encoding="utf-8") as f:
    for rollout, verdict in zip(evaluation.rollouts, evaluation.judgements):
      f.write(json.dumps({
          "task_id": verdict.task_id, "template": rollout.task.template,
          "generalization": verdict.generalization, "status": verdict.status.value,
          "tool_recall": verdict.tool_recall, "num_steps": rollout.num_steps,
          "succ_calling": list(verdict.succ_calling), "step_rewards": list(verdict.step_rewards),
          "outcomes": list(rollout.outcomes), "stops": [a.stop for a in rollout.actions]}) + "\n")
  with open(out / "metrics.json", "w", encoding="utf-8") as f:
    json.dump({"summary": summary, "metrics": evaluation.metrics}, f, indent=1)


def run(config: ml_collections.ConfigDict, policy: Policy | None = None) -> dict[str, Any]:
  """Loads what the config names, evaluates, writes the outputs; returns the summary."""
  config = with_run_settings(config)
  tokenizer = load_policy_tokenizer(config)
  tasks = load_tasks(config)
  if not tasks:
    raise ValueError(f"eval.split: the {config.eval.split!r} split has no tasks")
  acting = build_policy(config, tokenizer, policy)
  start = time.perf_counter()
  evaluation = evaluate_policy(tasks, acting, tokenizer, rollout_settings(config, tokenizer))
  summary = evaluation.summary(config.eval.split)
  summary["policy"] = config.policy.kind
  summary["seconds"] = round(time.perf_counter() - start, 2)
  if config.output_dir:
    write_outputs(config.output_dir, evaluation, summary)
  return summary


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = flags.FLAGS.config
  if config is None:
    raise app.UsageError("--config is required (e.g. --config=configs/evaluate.py)")
  logging.info("config:\n%s", config)
  summary = run(config)
  for name in HEADLINE:
    low, high = summary[f"{name}_ci"]
    if summary[name] is None:
      logging.info("%s: undefined (nothing to rate)", name)
    else:
      logging.info("%s = %.4f  (95%% CI %.4f .. %.4f)", name, summary[name], low, high)
  sys.stdout.write(json.dumps(summary) + "\n")
  sys.stdout.flush()


if __name__ == "__main__":
  # Defined here, not at import: the benchmark imports this module next to the trainer,
  # which has a --config flag of its own.
  config_flags.DEFINE_config_file("config", None, "Evaluation config file (configs/evaluate.py).", lock_config=True)
  app.run(main, flags_parser=parse_flags)
