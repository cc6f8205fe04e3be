"""`benchmarks/device_suite.py --smoke` runs in-process and writes its JSON and markdown: every part
measured or skipped with its reason, figures finite and positive, a zero budget skips its part.

Run in-process (a subprocess would pay the imports again). The suite's time in the test suite is
kept down by giving two parts a zero budget (which is also the skip under test): all four parts at
smoke size cost ~100 s of compilation on 2 shared cores, the two measured here ~30 s.
`python benchmarks/device_suite.py --smoke` runs all four.
"""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import device_suite
from steptool_jax.models.config import tiny


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  out = tmp_path_factory.mktemp("device-suite")
  options = device_suite.SuiteOptions(smoke=True, out_dir=str(out), budget_ppo_s=0, budget_decode_s=0)
  return device_suite.run_suite(options), out


def positive(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_every_part_is_in_the_json_and_the_markdown(smoke):
  results, out = smoke
  written = json.loads((out / "device_suite_cpu_smoke.json").read_text())
  assert list(written["parts"]) == list(device_suite.PARTS) == list(results["parts"])
  assert written["suite"]["smoke"] is True and written["suite"]["hbm_bytes_per_s"] is None
  assert "not in trainer.flops.DEVICE_SPECS" in written["suite"]["peak_source"]  # a CPU: a measured matmul rate
  markdown = (out / "device_suite_cpu_smoke.md").read_text()
  for row in ("| train step,", "| PPO update (lora) |", "| PPO update (full) |", "| decode batch |",
              "| online iteration,"):
    assert row in markdown, row
  assert "| >= 45% MFU | n/a (no device peak) |" in markdown  # no verdict against a measured matmul rate
  summary = device_suite.summary(results)
  assert set(device_suite.PARTS) <= set(summary)
  json.dumps(summary)  # the last stdout line


def test_a_zero_budget_skips_its_part(smoke):
  results, out = smoke
  written = json.loads((out / "device_suite_cpu_smoke.json").read_text())
  for name in ("ppo_update", "decode"):
    assert written["parts"][name] == {"status": "skipped", "reason": "budget 0 s", "budget_s": 0,
                                      "target": {device_suite.TARGETS[name][0]: device_suite.TARGETS[name][1]}}
  assert "skipped: budget 0 s" in (out / "device_suite_cpu_smoke.md").read_text()


def test_train_step_figures(smoke):
  part = json.loads((smoke[1] / "device_suite_cpu_smoke.json").read_text())["parts"]["train_step"]
  assert part["status"] == "measured" and part["steps"] >= 1
  for key in ("step_s", "tokens_per_s", "mfu", "compile_s", "seconds"):
    assert positive(part[key]), key
  assert part["tokens_per_s"] == pytest.approx(part["batch"] * part["seq_len"] / part["step_s"])
  # Model FLOPs by hand: 3 x (2 x matmul weights + attention) per token, full fine-tuning.
  cfg = tiny(vocab_size=512)
  e, f, layers, t = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, part["seq_len"]
  q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
  matmul = layers * (e * q + 2 * e * kv + q * e + 3 * e * f) + e * cfg.vocab_size
  per_token = 3 * (2 * matmul + 2 * layers * cfg.num_heads * cfg.head_dim * t)
  assert part["flops_per_step"] == pytest.approx(per_token * part["batch"] * t)


def test_online_iteration_figures(smoke):
  part = json.loads((smoke[1] / "device_suite_cpu_smoke.json").read_text())["parts"]["online_iteration"]
  assert part["status"] == "measured" and part["iterations"] >= 1
  assert part["episodes"] == 2 and part["max_steps"] == 2 and 1 <= part["mean_steps"] <= 2
  for key in ("rollout_s", "update_s", "iteration_s", "rollout_action_tokens_per_s", "update_tokens_per_s", "mfu",
              "first_iteration_s"):
    assert positive(part[key]), key
  assert part["iteration_s"] == pytest.approx(part["rollout_s"] + part["update_s"])
  assert part["update_tokens_per_s"] == pytest.approx(part["episodes"] * part["width"] / part["update_s"])


@pytest.mark.parametrize("budget, left, reason", [
    (0, 100, "budget 0 s"),
    (80, 19.9, "the suite's time is spent: 20 s left, under a quarter of this part's 80 s budget"),
    (80, 20, None),
    (80, -5, "the suite's time is spent: 0 s left, under a quarter of this part's 80 s budget"),
])
def test_skip_reason(budget, left, reason):
  assert device_suite.skip_reason(budget, left) == reason


def test_default_budgets_fit_the_device_window():
  assert sum(device_suite.SuiteOptions().budgets().values()) <= 8 * 60 - 30  # start-up and imports


def test_markdown_of_a_gpu_run_gives_verdicts_against_the_targets():
  """The device path of the markdown, which a CPU run never takes: figures with the table's peak."""
  train = {"status": "measured", "preset": "llama3_2_1b", "batch": 4, "seq_len": 4096, "dtype": "bfloat16",
           "remat": "full", "mfu": 0.5, "tokens_per_s": 50_000.0, "step_s": 0.33, "steps": 10, "compile_s": 40.0,
           "seconds": 80.0}
  lora = {"status": "measured", "rows": 8, "seq_len": 4096, "epochs": 4, "minibatch": 2, "mfu": 0.3,
          "tokens_per_s": 9000.0, "update_s": 3.6, "steps": 5, "compile_s": 60.0}
  batch_1 = {"status": "measured", "batch": 1, "prompt_len": 512, "tokens_per_s": 1500.0, "ms_per_step": 0.67,
             "bound_tokens_per_s": 2000.0, "fraction_of_bound": 0.75}
  results = {"suite": {"device": "NVIDIA H200", "smoke": False, "command": "device_suite.py", "date": "today",
                       "jax": "0", "host": "x", "wall_s": 470.0, "peak_flops": 989e12, "peak_source": "table",
                       "peak_measured": False, "hbm_bytes_per_s": 4.8e12, "budgets_s": {"train_step": 90}},
             "parts": {"train_step": train,
                       "ppo_update": {"status": "measured", "lora": lora,
                                      "full": {"status": "skipped", "reason": "the part's budget was spent"}},
                       "decode": {"status": "measured", "preset": "llama3_2_1b", "batch_1": batch_1,
                                  "batch_32": {"status": "failed", "error": "XlaRuntimeError: out of memory"}},
                       "online_iteration": {"status": "not_run", "reason": "the suite stopped before this part ended"}}}
  markdown = device_suite.markdown(results)
  assert "HBM: 4,800 GB/s" in markdown
  assert "| 50.0% MFU, 50,000 tokens/s" in markdown and "| >= 45% MFU | meets |" in markdown
  assert "| 30.0% MFU, 9,000 tokens/s" in markdown and "| >= 40% MFU | below |" in markdown
  assert "| PPO update (full) | skipped: the part's budget was spent |" in markdown
  assert "bound 2,000.0 (75.0%) | >= 50% of bound | meets |" in markdown
  assert "| decode batch 32 | failed: XlaRuntimeError: out of memory |" in markdown
  assert "| online iteration | not_run: the suite stopped before this part ended |" in markdown
