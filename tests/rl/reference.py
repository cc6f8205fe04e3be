"""Plain-Python reference loops, written from the definitions, independent of the jitted code.

Two of them mirror the original StepTool trainer (TRL's PPO): its per-token GAE
loop (`gae_token_loop`) and its per-row reward placement that walks the action
mask backwards run by run (`place_original_loop`). The others follow the issue's
formulas one element at a time. Everything is float64 Python scalars.
"""

from __future__ import annotations

import math
from typing import Sequence


def gae_token_loop(rewards, values, mask, gamma: float, lam: float):
  """The original trainer: mask rewards and values, recurse over every position."""
  advantages, returns = [], []
  for r_row, v_row, m_row in zip(rewards, values, mask):
    r = [float(x) * float(m) for x, m in zip(r_row, m_row)]
    v = [float(x) * float(m) for x, m in zip(v_row, m_row)]
    length = len(r)
    adv = [0.0] * length
    running = 0.0
    for t in reversed(range(length)):
      next_value = v[t + 1] if t < length - 1 else 0.0
      delta = r[t] + gamma * next_value - v[t]
      running = delta + gamma * lam * running
      adv[t] = running
    advantages.append(adv)
    returns.append([a + x for a, x in zip(adv, v)])
  return advantages, returns


def gae_step_loop(rewards, values, mask, gamma: float, lam: float):
  """Step mode: the recursion over the list of action positions only."""
  advantages, returns = [], []
  for r_row, v_row, m_row in zip(rewards, values, mask):
    length = len(r_row)
    positions = [t for t in range(length) if m_row[t]]
    adv = [0.0] * length
    ret = [0.0] * length
    running = 0.0
    for k in reversed(range(len(positions))):
      here = positions[k]
      next_value = float(v_row[positions[k + 1]]) if k + 1 < len(positions) else 0.0
      delta = float(r_row[here]) + gamma * next_value - float(v_row[here])
      running = delta + gamma * lam * running
      adv[here] = running
      ret[here] = running + float(v_row[here])
    advantages.append(adv)
    returns.append(ret)
  return advantages, returns


def place_paper_loop(step_rewards, step_ids, weights=None):
  """Each step's reward (times weights[b][s] if given) on the last token carrying its id."""
  out = []
  for b, (rewards_row, ids_row) in enumerate(zip(step_rewards, step_ids)):
    row = [0.0] * len(ids_row)
    for s in range(len(rewards_row)):
      where = [t for t, sid in enumerate(ids_row) if sid == s]
      if where:
        weight = 1.0 if weights is None else weights[b][s]
        row[where[-1]] += float(rewards_row[s]) * weight
    out.append(row)
  return out


def place_original_loop(scores: Sequence[Sequence[float]], mask):
  """The original `compute_rewards` placement, restated: walk the mask from the end.

  `scores[b]` is the row's full reward list (T steps). Runs of ones in the mask
  are matched to steps from the last one backwards; step k's score times
  `T-1-k` goes on its run's last position. Stops when runs or scores run out.
  """
  out = []
  for score, m_row in zip(scores, mask):
    row = [0.0] * len(m_row)
    remaining = list(m_row)
    for k in reversed(range(len(score))):
      ones = [t for t, x in enumerate(remaining) if x]
      if not ones:
        break
      end = ones[-1]
      row[end] += float(score[k]) * (len(score) - k - 1)
      remaining = remaining[:end + 1]
      zeros = [t for t, x in enumerate(remaining) if not x]
      if not zeros:
        break
      remaining = remaining[:zeros[-1] + 1]
    out.append(row)
  return out


def masked_whiten_loop(x, mask, shift_mean: bool = True, eps: float = 1e-8):
  """The original's whitening (Bessel-corrected variance over the masked batch)."""
  picked = [float(v) for row, m_row in zip(x, mask) for v, m in zip(row, m_row) if m]
  n = len(picked)
  mean = sum(picked) / n
  var = sum((v - mean) ** 2 for v in picked) / n * n / (n - 1)
  out = []
  for row, m_row in zip(x, mask):
    new = []
    for v, m in zip(row, m_row):
      w = (float(v) - mean) / math.sqrt(var + eps) + (0.0 if shift_mean else mean)
      new.append(w if m else 0.0)
    out.append(new)
  return out


def returns_to_go_loop(step_rewards, num_steps, gamma: float):
  out = []
  for row, n in zip(step_rewards, num_steps):
    g = [0.0] * len(row)
    running = 0.0
    for s in reversed(range(n)):
      running = float(row[s]) + gamma * running
      g[s] = running
    out.append(g)
  return out


def group_advantages_loop(step_rewards, num_steps, group_ids, gamma: float, scope: str, eps: float):
  returns = returns_to_go_loop(step_rewards, num_steps, gamma)
  out = []
  for b, row in enumerate(returns):
    peers = [c for c in range(len(returns)) if group_ids[c] == group_ids[b]]
    new = [0.0] * len(row)
    for s in range(num_steps[b]):
      if scope == "group":
        pool = [returns[c][j] for c in peers for j in range(num_steps[c])]
      else:
        pool = [returns[c][s] for c in peers if s < num_steps[c]]
      mean = sum(pool) / len(pool)
      std = math.sqrt(sum((p - mean) ** 2 for p in pool) / len(pool))
      new[s] = (row[s] - mean) / (std + eps) if std > 0 else 0.0
    out.append(new)
  return out
