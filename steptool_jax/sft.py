r"""Supervised fine-tuning on tool-use conversations (loss on assistant actions only).

    python -m steptool_jax.sft --config=configs/tiny.py:sft --workdir=/tmp/steptool-sft
    python -m steptool_jax.train --config=configs/tiny.py --workdir=/tmp/steptool-ppo \
        --config.model.init_from=/tmp/steptool-sft      # StepTool PPO from the SFT policy

The paper fine-tunes Qwen2 and Llama 3.1 on ToolBench conversations before StepTool. Same
config files (`config.algorithm = "sft"`), mesh, state, checkpoints, metrics and loop as
`steptool_jax.train`; only the update differs (`trainer/sft_update.py`).
"""

from __future__ import annotations

import sys
from typing import Sequence

from absl import app

from steptool_jax.cli import parse_flags
from steptool_jax.train import run_main, train_and_evaluate

__all__ = ["main", "train_and_evaluate"]


def main(argv: Sequence[str]) -> None:
  sys.exit(run_main(argv, "sft", "steptool_jax.sft"))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
