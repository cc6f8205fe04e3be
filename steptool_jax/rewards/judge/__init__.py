"""The paper's LLM step judge against any OpenAI-compatible endpoint.

A judge model is forced to call `evaluate_process_reward` with SuccCalling (0/1) and
Contribution (0-5) per intermediate step and the final answer's status; several runs per
trajectory are averaged by the shaping formula of `steptool_jax.rewards.shaping`.

- `settings.py`: `JudgeSettings` and the CLI flags;
- `prompt.py`, `prompt.txt`: the user-editable prompt template;
- `schema.py`: the forced function's schema and the validation of its arguments;
- `client.py`: one run with retries over the `openai` client;
- `cache.py`: finished runs on disk (resume after an interruption);
- `annotator.py`: many trajectories with bounded concurrency, progress and a summary.
"""

from steptool_jax.rewards.judge.annotator import JudgeSummary, annotation_from_runs, judge_trajectories
from steptool_jax.rewards.judge.client import JudgeRefusedError, RunOutcome, ask_judge, make_client, request_body
from steptool_jax.rewards.judge.schema import FUNCTION_NAME, JudgeOutputError, evaluation_tool, \
    judge_run_from_arguments, judge_run_from_completion
from steptool_jax.rewards.judge.settings import JudgeSettings, add_judge_arguments, judge_settings_from_args

__all__ = [
    "FUNCTION_NAME", "JudgeOutputError", "JudgeRefusedError", "JudgeSettings", "JudgeSummary", "RunOutcome",
    "add_judge_arguments", "annotation_from_runs", "ask_judge", "evaluation_tool", "judge_run_from_arguments",
    "judge_run_from_completion", "judge_settings_from_args", "judge_trajectories", "make_client", "request_body",
]
