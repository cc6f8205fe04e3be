"""Evaluation metrics over judged episodes, with 95% confidence intervals.

Per episode: the IsSolved score (Solved 1, Unsure 0.5, Unsolved 0: the paper's pass rate),
whether it was Solved, tool recall (relevant tools called / relevant tools), the number of
steps (actions, Finish included), and its intermediate calls and how many of them failed
(SuccCalling 0).

- Means of per-episode values get a Student-t interval, `mean ± t(0.975, n−1)·s/√n`.
- The failed-call rate pools calls over episodes (failed calls / calls), a ratio of two
  sums. Episodes are the independent units, so its interval comes from the delta method
  over episodes: `SE² = Σ_i (f_i − r·c_i)² / (n(n−1) c̄²)` (`f_i` failed, `c_i` calls in
  episode i, `r` the rate, `c̄` the mean calls per episode).
With one episode (or no spread) the interval has zero width.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Mapping, Sequence

import numpy as np

from steptool_jax.envs.judge import Judgement

CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A point estimate with its confidence interval over `n` units."""

  mean: float
  low: float
  high: float
  n: int

  @property
  def half_width(self) -> float:
    return (self.high - self.low) / 2

  def to_json(self) -> dict[str, float | None]:
    """JSON-safe: an undefined value (no calls to rate) is None, not NaN."""
    def number(x: float) -> float | None:
      return None if math.isnan(x) else x
    return {"mean": number(self.mean), "ci_low": number(self.low), "ci_high": number(self.high), "n": self.n}


def t_quantile(n: int, confidence: float = CONFIDENCE) -> float:
  """The two-sided Student-t critical value for `n` units (`n − 1` degrees of freedom)."""
  from scipy import stats as scipy_stats  # noqa: PLC0415 (1.2 s to import: only where an interval is computed)
  return float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) if n > 1 else 0.0


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
  """Mean of `values` with a Student-t interval (zero width for n ≤ 1)."""
  x = np.asarray(values, np.float64)
  n = len(x)
  if n == 0:
    return Estimate(math.nan, math.nan, math.nan, 0)
  mean = float(x.mean())
  half = t_quantile(n, confidence) * float(x.std(ddof=1)) / math.sqrt(n) if n > 1 else 0.0
  return Estimate(mean, mean - half, mean + half, n)


def ratio_ci(numerators: Sequence[float], denominators: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
  """`Σ numerators / Σ denominators` with a delta-method interval over the units.

  Units with a zero denominator count in `n` but add nothing to the ratio. No denominator
  at all (no calls) gives NaN.
  """
  f = np.asarray(numerators, np.float64)
  c = np.asarray(denominators, np.float64)
  n = len(f)
  if n == 0 or c.sum() == 0:
    return Estimate(math.nan, math.nan, math.nan, n)
  rate = float(f.sum() / c.sum())
  if n == 1:
    return Estimate(rate, rate, rate, n)
  se = math.sqrt(float(np.sum((f - rate * c) ** 2)) / (n * (n - 1))) / float(c.mean())
  half = t_quantile(n, confidence) * se
  return Estimate(rate, rate - half, rate + half, n)


@dataclasses.dataclass(frozen=True)
class EpisodeScore:
  """What the metrics need from one judged episode."""

  task_id: str
  template: str
  generalization: str
  status: str
  is_solved: float
  tool_recall: float
  steps: int
  calls: int
  failed_calls: int

  @classmethod
  def from_judgement(cls, judgement: Judgement, *, template: str, steps: int) -> "EpisodeScore":
    return cls(task_id=judgement.task_id, template=template, generalization=judgement.generalization,
               status=judgement.status.value, is_solved=judgement.status.reward, tool_recall=judgement.tool_recall,
               steps=steps, calls=len(judgement.succ_calling),
               failed_calls=sum(1 - sc for sc in judgement.succ_calling))


def _group_metrics(scores: Sequence[EpisodeScore]) -> dict[str, Estimate]:
  return {
      "pass_rate": mean_ci([s.is_solved for s in scores]),
      "solved_rate": mean_ci([float(s.status == "Solved") for s in scores]),
      "tool_recall": mean_ci([s.tool_recall for s in scores]),
      "steps": mean_ci([float(s.steps) for s in scores]),
      "failed_call_rate": ratio_ci([s.failed_calls for s in scores], [s.calls for s in scores]),
  }


def evaluation_metrics(scores: Iterable[EpisodeScore]) -> dict[str, object]:
  """The metrics (each `{mean, ci_low, ci_high, n}`), overall and per generalization group
  and template, plus the count of each verdict."""
  scores = list(scores)
  by: dict[str, dict[str, list[EpisodeScore]]] = {"generalization": {}, "template": {}}
  for s in scores:
    by["generalization"].setdefault(s.generalization, []).append(s)
    by["template"].setdefault(s.template, []).append(s)

  def as_json(metrics: Mapping[str, Estimate]) -> dict[str, dict[str, float]]:
    return {name: estimate.to_json() for name, estimate in metrics.items()}

  return {
      "episodes": len(scores),
      "status_counts": {status: sum(s.status == status for s in scores) for status in ("Solved", "Unsure", "Unsolved")},
      **as_json(_group_metrics(scores)),
      "by_generalization": {g: as_json(_group_metrics(v)) for g, v in sorted(by["generalization"].items())},
      "by_template": {t: as_json(_group_metrics(v)) for t, v in sorted(by["template"].items())},
  }
