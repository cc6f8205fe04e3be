"""Online rollouts in the built-in environment: batched lock-step episodes driven by a
generating (or scripted) policy, rule annotation, and shaping into training examples.

    stops = action_stops(tokenizer, "toolllama")
    policy = model_policy(policy, tokenizer, stops, SamplingConfig(max_new_tokens=128, temperature=1.0),
                          rng, template="toolllama", max_batch=32, widths=width_buckets(1024),
                          reuse_cache=True)  # each episode keeps its KV cache across turns (the default)
    settings = RolloutSettings(bos_id=1, max_context_len=1024, max_response_len=128, environment=EnvSettings(),
                               template="toolllama", group_size=4)
    collected = collect(tasks, policy, tokenizer, settings)
    collected.examples   # dicts for data.batching.collate_step_grained (+ behaviour_logp, group_id)
"""

from steptool_jax.rollout.collect import Collected, RolloutSettings, collect, grouped
from steptool_jax.rollout.context import encode_texts, policy_context
from steptool_jax.rollout.episodes import Rollout, run_episodes
from steptool_jax.rollout.examples import behaviour_logprobs, pack_rollout, step_grained_row, tokenized_example
from steptool_jax.rollout.metrics import Estimate, EpisodeScore, evaluation_metrics, mean_ci, ratio_ci
from steptool_jax.rollout.policies import (
    Action, ActionPolicy, ActionRequest, ModelPolicy, batch_buckets, chunk_buckets, model_policy, text_policy,
    width_buckets)
from steptool_jax.rollout.scripted import expert_writer, give_up_writer
from steptool_jax.rollout.stopping import ActionStops, action_stops, split_action

__all__ = [
    "Action", "ActionPolicy", "ActionRequest", "ActionStops", "Collected", "EpisodeScore", "Estimate", "ModelPolicy",
    "Rollout", "RolloutSettings", "action_stops", "batch_buckets", "behaviour_logprobs", "chunk_buckets", "collect",
    "encode_texts",
    "evaluation_metrics", "expert_writer", "give_up_writer", "grouped", "mean_ci", "model_policy",
    "pack_rollout", "policy_context", "ratio_ci", "run_episodes", "split_action", "step_grained_row",
    "text_policy", "tokenized_example", "width_buckets",
]
