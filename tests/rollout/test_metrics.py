"""Evaluation metrics and their intervals, against numbers worked out by hand."""

import math

import numpy as np
import pytest

from steptool_jax.data.records import AnswerStatus
from steptool_jax.envs.judge import Judgement
from steptool_jax.rollout.metrics import EpisodeScore, evaluation_metrics, mean_ci, ratio_ci, t_quantile


def test_t_quantiles_are_the_table_values():
  # Two-sided 95%: df 1 -> 12.706, df 2 -> 4.303, df 3 -> 3.182, df 1e6 -> 1.960.
  assert t_quantile(2) == pytest.approx(12.7062, abs=1e-4)
  assert t_quantile(3) == pytest.approx(4.3027, abs=1e-4)
  assert t_quantile(4) == pytest.approx(3.1824, abs=1e-4)
  assert t_quantile(10**6 + 1) == pytest.approx(1.95996, abs=1e-4)


def test_mean_ci_by_hand():
  # [0, 0.5, 1, 1]: mean 0.625; deviations -0.625, -0.125, 0.375, 0.375 -> s^2 = 0.6875/3;
  # half width = 3.1824 * sqrt(0.22917) / 2 = 0.76173.
  estimate = mean_ci([0.0, 0.5, 1.0, 1.0])
  assert estimate.mean == 0.625 and estimate.n == 4
  assert estimate.half_width == pytest.approx(0.76173, abs=1e-4)
  assert estimate.low == pytest.approx(0.625 - 0.76173, abs=1e-4)


def test_mean_ci_degenerate_cases():
  assert mean_ci([1.0, 1.0, 1.0]).half_width == 0
  one = mean_ci([0.5])
  assert (one.mean, one.low, one.high, one.n) == (0.5, 0.5, 0.5, 1)
  assert math.isnan(mean_ci([]).mean) and mean_ci([]).to_json()["mean"] is None


def test_ratio_ci_by_hand():
  # failed calls 1, 0, 2 of 2, 1, 2 calls: rate 3/5 = 0.6, mean calls 5/3.
  # f - r c = 1 - 1.2, 0 - 0.6, 2 - 1.2 = -0.2, -0.6, 0.8; squares sum 0.04 + 0.36 + 0.64 = 1.04
  # SE = sqrt(1.04 / (3 * 2)) / (5/3) = 0.24980; half width = 4.3027 * 0.24980 = 1.07481.
  estimate = ratio_ci([1, 0, 2], [2, 1, 2])
  assert estimate.mean == pytest.approx(0.6)
  assert estimate.half_width == pytest.approx(1.07481, abs=1e-4)
  assert math.isnan(ratio_ci([0, 0], [0, 0]).mean)  # nothing to rate
  assert ratio_ci([0, 1], [0, 4]).mean == 0.25  # an episode without calls adds nothing to the ratio


def _score(status, template="t1", group="seen", recall=1.0, steps=2, succ=(1,)):
  verdict = Judgement(task_id="x", generalization=group, status=status, step_rewards=(0.0,) * (len(succ) + 1),
                      succ_calling=succ, tool_recall=recall)
  return EpisodeScore.from_judgement(verdict, template=template, steps=steps)


def test_evaluation_metrics_by_hand():
  scores = [
      _score(AnswerStatus.SOLVED, recall=1.0, steps=2, succ=(1,)),
      _score(AnswerStatus.UNSURE, recall=0.5, steps=3, succ=(1, 0)),
      _score(AnswerStatus.UNSOLVED, "t2", "unseen_templates", recall=0.0, steps=1, succ=()),
      _score(AnswerStatus.SOLVED, "t2", "unseen_templates", recall=1.0, steps=4, succ=(0, 1, 1)),
  ]
  m = evaluation_metrics(scores)
  assert m["episodes"] == 4 and m["status_counts"] == {"Solved": 2, "Unsure": 1, "Unsolved": 1}
  assert m["pass_rate"]["mean"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)  # Unsure counts half
  assert m["solved_rate"]["mean"] == 0.5
  assert m["tool_recall"]["mean"] == pytest.approx(2.5 / 4)
  assert m["steps"]["mean"] == 2.5
  assert m["failed_call_rate"]["mean"] == pytest.approx(2 / 6)  # pooled over the 6 calls
  assert m["by_template"]["t1"]["pass_rate"]["mean"] == 0.75
  assert m["by_generalization"]["unseen_templates"]["solved_rate"]["mean"] == 0.5
  assert m["by_generalization"]["seen"]["failed_call_rate"]["n"] == 2
  low, high = m["pass_rate"]["ci_low"], m["pass_rate"]["ci_high"]
  s = np.std([1, 0.5, 0, 1], ddof=1)
  assert high - low == pytest.approx(2 * 3.1824 * s / 2, abs=1e-3)
