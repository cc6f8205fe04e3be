"""`python -m steptool_jax.export`: an Orbax LoRA checkpoint -> a merged HF directory."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp

from steptool_jax.models import load_pretrained, save_pretrained
from tests.models.tiny_models import IDS, MASK, lora_policy, tiny_policy
from tests.tiny_tokenizer import tiny_tokenizer

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_cli_merges_adapters_and_copies_the_tokenizer(tmp_path):
  base_dir = save_pretrained(tiny_policy(), tmp_path / "base", dtype="float32")
  tiny_tokenizer().save_pretrained(base_dir)
  trained = lora_policy()
  adapters = trained.variables["lora"]
  # What a LoRA run saves: only the trained parts, under `state.policy`.
  checkpoint = tmp_path / "ckpt" / "100" / "state"
  saver = ocp.StandardCheckpointer()
  saver.save(checkpoint, {"step": 100, "policy": {"lora": adapters, "value_head": trained.variables["value_head"]}})
  saver.wait_until_finished()

  out = tmp_path / "export"
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
  subprocess.run([sys.executable, "-m", "steptool_jax.export", f"--checkpoint={checkpoint}",
                  f"--base_model={base_dir}", f"--output={out}", "--params_key=policy",
                  f"--lora_alpha={trained.lora.alpha}", "--dtype=float32"], check=True, cwd=REPO, env=env, timeout=300)

  assert (out / "tokenizer.json").is_file() and (out / "config.json").is_file()
  exported = load_pretrained(out)
  assert exported.lora is None
  np.testing.assert_allclose(np.asarray(exported.logits(IDS, MASK)), np.asarray(trained.logits(IDS, MASK)),
                             atol=2e-5, rtol=1e-5)
  np.testing.assert_array_equal(exported.variables["value_head"]["kernel"], trained.variables["value_head"]["kernel"])
