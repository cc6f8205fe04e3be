"""`python -m steptool_jax.export`: a run directory of ours, an Orbax LoRA checkpoint (on an HF or a GGUF base), or a GGUF file,
-> a merged HF directory."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import flax
import gguf
import jax
import numpy as np
import orbax.checkpoint as ocp

from steptool_jax import export
from steptool_jax.models import LoraConfig, Policy, abstract_variables, load_pretrained, save_pretrained
from tests.models.tiny_gguf import write_tiny_gguf
from tests.models.tiny_models import IDS, MASK, lora_policy, tiny_policy
from tests.tiny_tokenizer import tiny_tokenizer
from tests.trainer.fixtures import compile_cache, data_cache  # noqa: F401 (fixtures)

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


def test_adapters_trained_on_a_gguf_base_are_merged_and_exported(tmp_path):
  # The CLI's steps in process (the CLI itself runs in the test above): Orbax adapters on a GGUF `--base_model`.
  base_file = write_tiny_gguf(tmp_path / "base.gguf", qtype=gguf.GGMLQuantizationType.Q8_0).path
  base = load_pretrained(base_file)
  lora = LoraConfig(rank=4, alpha=8.0)
  rng = np.random.default_rng(0)
  # Non-zero A and B, drawn with numpy from the adapters' shapes (no init to compile).
  shapes = flax.linen.unbox(abstract_variables(base.config, lora)["lora"])
  adapters = jax.tree.map(lambda x: 0.05 * rng.standard_normal(x.shape).astype(np.float32), shapes)
  trained = Policy(config=base.config, variables={**base.variables, "lora": adapters}, lora=lora)
  checkpoint = tmp_path / "ckpt" / "7" / "state"
  saver = ocp.StandardCheckpointer()
  saver.save(checkpoint, {"step": 7, "policy": {"lora": adapters}})
  saver.wait_until_finished()

  policy, tokenizer_source = export.policy_from_checkpoint(str(checkpoint), str(base_file), "policy", 8.0)
  out = save_pretrained(policy, tmp_path / "export", dtype="float32")
  assert tokenizer_source == str(base_file)
  assert export.write_tokenizer(tokenizer_source, out) == []  # the tiny file holds no tokenizer: said, not fatal
  # The merged weights (W + scale * A @ B, from the adapters' own rank and --lora_alpha) are what was written.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), load_pretrained(out).variables["params"],
               trained.merged().variables["params"])
  assert not np.allclose(load_pretrained(out).variables["params"]["layers"]["self_attn"]["q_proj"]["kernel"],
                         base.variables["params"]["layers"]["self_attn"]["q_proj"]["kernel"])  # the adapters did count


def test_a_gguf_checkpoint_is_exported_as_it_is(tmp_path):
  tiny = write_tiny_gguf(tmp_path / "m.gguf", qtype=gguf.GGMLQuantizationType.Q4_0)
  policy, tokenizer_source = export.policy_from_checkpoint(str(tiny.path), None, "params", 16.0)
  assert tokenizer_source == str(tiny.path) and "value_head" not in policy.variables
  out = save_pretrained(policy, tmp_path / "export", dtype="float32")
  assert not (out / "value_head.safetensors").exists()
  jax.tree.map(np.testing.assert_array_equal, load_pretrained(out).variables["params"],
               load_pretrained(tiny.path).variables["params"])


def test_a_run_directory_exports_its_merged_policy_and_its_tokenizer(tmp_path, data_cache, compile_cache):  # noqa: F811
  """`--checkpoint=WORKDIR` (what the end-of-run summary suggests): one LoRA SFT step of the
  tiny config, exported; Hugging Face's PyTorch model of the export gives the logits of the
  run's own trained policy (adapters merged by hand here), and its tokenizer is the run's."""
  import torch  # noqa: PLC0415
  from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

  from steptool_jax import train  # noqa: PLC0415
  from steptool_jax.config.run import parse_run_config  # noqa: PLC0415
  from steptool_jax.envs.builtin_tokenizer import load_tokenizer  # noqa: PLC0415
  from steptool_jax.trainer import policy_init  # noqa: PLC0415
  from tests.trainer.fixtures import tiny_run_config  # noqa: PLC0415

  config = tiny_run_config(data_cache, "sft,lora", train__num_steps=1, log__tensorboard=False,
                           optim__learning_rate=0.05)
  result = train.train_and_evaluate(config, tmp_path / "run", devices=jax.devices()[:1])
  run = parse_run_config(config)
  vocab = result.state.policy["params"]["embed"]["embedding"].shape[0]
  trained = Policy(config=policy_init.random_model_config(run, vocab), variables=result.state.policy,
                   lora=run.model.lora.lora_config())

  out = tmp_path / "hf"
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
  subprocess.run([sys.executable, "-m", "steptool_jax.export", f"--checkpoint={tmp_path / 'run'}", f"--output={out}",
                  "--dtype=float32"], check=True, cwd=REPO, env=env, timeout=300)

  ids = np.arange(1, 33, dtype=np.int32).reshape(2, 16)
  with torch.no_grad():
    theirs = AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32)(torch.tensor(ids)).logits.numpy()
  np.testing.assert_allclose(theirs, np.asarray(trained.logits(ids)), atol=2e-4, rtol=1e-4)
  text = "Thought: call get_weather\nAction: get_weather"
  assert AutoTokenizer.from_pretrained(out).encode(text, add_special_tokens=False) == load_tokenizer().encode(
      text, add_special_tokens=False)
