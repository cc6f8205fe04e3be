"""The progress bar: step, tokens/s and ETA (tqdm), shown by process 0 only."""

from __future__ import annotations

from typing import Mapping

from tqdm.auto import tqdm


# (metric, label, format) shown after the bar when the step has them.
_SHOWN = (("loss", "loss", "{:.4f}"), ("perf/tokens_per_s", "tok/s", "{:,.0f}"), ("kl", "kl", "{:.3f}"),
          ("reward/score", "score", "{:.3f}"), ("perf/mfu", "mfu", "{:.1%}"))


class Progress:
  """A tqdm bar over the run's steps that starts at the resumed step."""

  def __init__(self, total_steps: int, start_step: int, *, enabled: bool, description: str = "train"):
    self._bar = tqdm(total=total_steps, initial=start_step, desc=description, unit="step", dynamic_ncols=True,
                     disable=not enabled, smoothing=0.1)

  def update(self, metrics: Mapping[str, float]) -> None:
    shown = {}
    for name, label, fmt in _SHOWN:
      if name in metrics:
        shown[label] = fmt.format(metrics[name])
    self._bar.set_postfix(shown, refresh=False)
    self._bar.update(1)

  def write(self, text: str) -> None:
    self._bar.write(text)

  def close(self) -> None:
    self._bar.close()
