"""`python -m steptool_jax.export`: an Orbax LoRA checkpoint (on an HF or a GGUF base), or a GGUF file,
-> a merged HF directory."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import gguf
import jax
import numpy as np
import orbax.checkpoint as ocp

from steptool_jax import export
from steptool_jax.models import LoraConfig, Policy, init_lora_params, load_pretrained, save_pretrained
from tests.models.tiny_gguf import write_tiny_gguf
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


def test_cli_exports_adapters_trained_on_a_gguf_base(tmp_path):
  base_file = write_tiny_gguf(tmp_path / "base.gguf", qtype=gguf.GGMLQuantizationType.Q8_0).path
  base = load_pretrained(base_file)
  lora = LoraConfig(rank=4, alpha=8.0)
  rng = np.random.default_rng(0)
  adapters = jax.tree.map(lambda x: np.asarray(x) + 0.05 * rng.standard_normal(x.shape).astype(np.float32),
                          init_lora_params(base.config, lora, jax.random.key(1)))
  trained = Policy(config=base.config, variables={**base.variables, "lora": adapters}, lora=lora)
  checkpoint = tmp_path / "ckpt" / "7" / "state"
  saver = ocp.StandardCheckpointer()
  saver.save(checkpoint, {"step": 7, "policy": {"lora": adapters}})
  saver.wait_until_finished()

  out = tmp_path / "export"
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
  result = subprocess.run([sys.executable, "-m", "steptool_jax.export", f"--checkpoint={checkpoint}",
                           f"--base_model={base_file}", f"--output={out}", "--params_key=policy", "--lora_alpha=8",
                           "--dtype=float32"], cwd=REPO, env=env, timeout=300, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  assert "no tokenizer written" in result.stderr and "tokenizer.ggml.tokens" in result.stderr  # the tiny file has none
  exported = load_pretrained(out)
  ids = np.array([[5, 9, 60, 7, 3, 44], [1, 2, 3, 4, 5, 6]], np.int32)
  np.testing.assert_allclose(np.asarray(exported.logits(ids)), np.asarray(trained.logits(ids)), atol=2e-5, rtol=1e-5)


def test_a_gguf_checkpoint_is_exported_as_it_is(tmp_path):
  tiny = write_tiny_gguf(tmp_path / "m.gguf", qtype=gguf.GGMLQuantizationType.Q4_0)
  policy, tokenizer_source = export.policy_from_checkpoint(str(tiny.path), None, "params", 16.0)
  assert tokenizer_source == str(tiny.path) and "value_head" not in policy.variables
  out = save_pretrained(policy, tmp_path / "export", dtype="float32")
  assert not (out / "value_head.safetensors").exists()
  jax.tree.map(np.testing.assert_array_equal, load_pretrained(out).variables["params"],
               load_pretrained(tiny.path).variables["params"])
