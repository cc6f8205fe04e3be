"""Every configuration field the trainers know, with its default: the schema of a run.

Config files (`configs/*.py`) start from `base_config()` and change what they need, so a
field that is not here is a typo: `config_checks.validate` rejects it by name. Strings
that may be unset are `""` (never None), so `--config.a.b=value` overrides type-check.
"""

from __future__ import annotations

import ml_collections

from steptool_jax.models.config import LORA_TARGETS


def base_config() -> ml_collections.ConfigDict:
  """The defaults: the built-in environment, the tiny model, the paper's PPO constants."""
  config = ml_collections.ConfigDict()
  config.algorithm = "ppo"  # ppo (python -m steptool_jax.train) | sft (python -m steptool_jax.sft)
  config.seed = 0

  # Device mesh: sizes of the `data`, `fsdp` and `tensor` axes; one may be -1 (the rest).
  config.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})
  # jax.distributed.initialize(): auto = when the environment names several processes.
  config.distributed = "auto"  # auto | on | off

  config.model = ml_collections.ConfigDict()
  config.model.preset = "tiny"  # architecture of a random init (steptool_jax.models.PRESETS)
  config.model.path = ""  # local Hugging Face directory: architecture, weights, tokenizer
  config.model.require_path = False  # the real-model configs set this: no path is an error
  config.model.init_from = ""  # our run's workdir (e.g. an SFT run) or an HF directory to start from
  config.model.param_dtype = "float32"  # frozen base weights
  config.model.compute_dtype = "float32"
  config.model.master_dtype = "float32"  # trainable weights and optimizer moments
  config.model.remat = "none"  # none | full | dots
  config.model.attention_impl = "xla"  # xla | cudnn
  config.model.logits_chunk = 512  # time chunk of the log-prob computation
  config.model.value_head_dropout = 0.0
  config.model.lora = ml_collections.ConfigDict()
  config.model.lora.enabled = False
  config.model.lora.rank = 8
  config.model.lora.alpha = 16.0
  config.model.lora.dropout = 0.0
  config.model.lora.targets = LORA_TARGETS

  config.tokenizer = ""  # "" = model.path; "builtin" = the environment's tokenizer; or a directory

  config.data = ml_collections.ConfigDict()
  config.data.train_path = ""  # step-grained TSV (ppo) or SFT json (sft); "" = built-in env data
  config.data.cache_dir = ""  # "" = WORKDIR/cache (generated env data, tokenised datasets)
  config.data.template = "toolllama"  # chat format of SFT conversations
  config.data.max_context_len = 3072
  config.data.max_response_len = 1024
  config.data.min_bucket_len = 256  # smallest length bucket; = max length gives one shape
  config.data.max_steps = 0  # step slots per row; 0 = the most steps of any row
  config.data.add_bos = True
  config.data.eos_after_actions = False
  config.data.skip_invalid = False
  config.data.sft_loss_on = "actions"  # actions | dialogue (SFT: which tokens are targets)
  config.data.env = ml_collections.ConfigDict()
  config.data.env.num_tasks = 200
  config.data.env.seed = 0
  config.data.env.mistake_rate = 0.3
  config.data.env.max_steps = 10
  config.data.env.templates = ""  # comma-separated task templates ("" = all twelve)
  config.data.env.hold_out_templates = True  # False: no template is kept for the test split only
  config.data.env.test_entities = "unseen"  # unseen: test holds out cities/currencies | seen: drawn like validation
  config.data.env.validation_fraction = 0.1
  config.data.env.test_fraction = 0.1
  config.data.env.quote_entities = False  # cities and days in quotes in the queries (as in the JSON calls)
  config.data.env.tool_descriptions = True  # False: the system prompt lists function signatures only
  config.data.env.thoughts = True  # False: the expert writes no Thought lines
  config.data.env.contribution = "answer_overlap"  # answer_overlap | reference (envs.judge)
  config.data.env.alpha = 1.0  # step reward (alpha SuccCalling + Contribution) / (alpha + 1); the paper's 1
  # The final reward of an episode that never called Finish (step limit), on its last step:
  # 0 = Unsolved; < 0 makes not answering worse than a wrong answer (docs/results.md, run 4).
  config.data.env.unfinished_reward = 0.0

  # Where PPO batches come from: fixed step-grained data (offline), or episodes the current
  # policy plays in the built-in environment (online: the train split of
  # generate_tasks(data.env.num_tasks, data.env.seed), data.env.max_steps actions per episode),
  # judged by the environment's rules. Online, batch.size rows = batch.size / group_size
  # tasks, each played group_size times.
  config.rollout = ml_collections.ConfigDict()
  config.rollout.mode = "offline"  # offline | online
  config.rollout.group_size = 1  # episodes per task in a batch (> 1 for ppo.advantage_estimator=group)
  config.rollout.temperature = 1.0  # sampling of the online episodes
  config.rollout.top_p = 1.0
  config.rollout.generation_batch = 0  # rows per generate call; 0 = batch.size
  config.rollout.width_bucket = 128  # prompts are left-padded to a multiple of this (fewer compiles)

  # Rows per step (PPO: per PPO iteration; SFT: per optimizer step), rows per forward/
  # backward pass, and passes accumulated into one optimizer step. All global (all hosts).
  config.batch = ml_collections.ConfigDict()
  config.batch.size = 8
  config.batch.minibatch_size = 2
  config.batch.grad_accum_steps = 4

  config.ppo = ml_collections.ConfigDict()
  config.ppo.epochs = 4  # passes over each batch
  config.ppo.gamma = 0.99
  config.ppo.lam = 0.95
  config.ppo.gae_mode = "step"  # step | token
  # gae (value head, GAE over the reward tensor) | group (critic-free: group-normalised step
  # returns-to-go over the rollouts of one task; online with rollout.group_size > 1, vf_coef 0,
  # the KL coefficient then weighs a KL term of the loss instead of the rewards)
  config.ppo.advantage_estimator = "gae"
  config.ppo.group_scope = "group"  # group | step (rl.group_advantages)
  config.ppo.whiten_advantages = True
  config.ppo.clip_eps = 0.2
  config.ppo.value_clip = 0.2
  config.ppo.vf_coef = 0.1
  config.ppo.entropy_coef = 0.0
  config.ppo.ratio_threshold = 10.0

  config.reward = ml_collections.ConfigDict()
  config.reward.granularity = "step"  # step (StepTool) | final (PPO, final reward) | summed
  config.reward.weighting = "paper"  # paper | original_code (only with granularity=step)
  config.reward.kl_penalty = "kl"  # kl | abs | mse | low_var_kl
  config.reward.kl_controller = "adaptive"  # adaptive | fixed
  config.reward.init_kl_coef = 0.3
  config.reward.kl_target = 6.0
  config.reward.kl_horizon = 10000.0

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 1e-5
  config.optim.schedule = "constant"  # constant | linear | cosine (after warmup)
  config.optim.warmup_steps = 0
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999
  config.optim.eps = 1e-8
  config.optim.weight_decay = 0.0
  config.optim.max_grad_norm = 1.0  # 0 = no clipping

  config.train = ml_collections.ConfigDict()
  config.train.num_epochs = 5  # passes over the data
  config.train.num_steps = 0  # > 0 overrides num_epochs

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 100
  config.checkpoint.keep = 3
  config.checkpoint.async_save = True

  config.log = ml_collections.ConfigDict()
  config.log.every_steps = 1
  config.log.tensorboard = True
  config.log.progress_bar = True
  config.log.peak_tflops = 0.0  # per device, for MFU; 0 = look the device up
  config.log.wandb = ml_collections.ConfigDict()
  config.log.wandb.enabled = False
  config.log.wandb.project = "steptool_jax"
  config.log.wandb.entity = ""
  config.log.wandb.name = ""
  config.log.wandb.mode = "online"  # online | offline
  return config


def apply_paper_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """StepTool's published PPO hyperparameters, for the 7-8B models of the paper.

  lr 1e-5; batch 8 in minibatches of 2 with 4 accumulation steps; 4 PPO epochs over each
  batch; adaptive KL (init 0.3, target 6, horizon 10000); gamma 0.99, lambda 0.95; clip
  0.2, value clip 0.2, vf coef 0.1; 5 epochs over the data; LoRA r 8 / alpha 16; context
  4096, response 1024; bf16 compute with float32 trainable weights. `model.path` (a local
  Hugging Face directory) is required. The sizes are global: on a mesh whose batch axes
  (data x fsdp) have more than 2 devices, raise `batch.minibatch_size` (and `batch.size`)
  to a multiple of them, or put the devices on the tensor axis (the default here).
  """
  config.model.require_path = True
  config.model.preset = ""
  config.tokenizer = ""  # the model directory's
  config.model.param_dtype = "bfloat16"
  config.model.compute_dtype = "bfloat16"
  config.model.master_dtype = "float32"
  config.model.remat = "full"
  config.model.logits_chunk = 1024
  config.model.lora.enabled = True
  config.model.lora.rank = 8
  config.model.lora.alpha = 16.0
  config.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": 1, "tensor": -1})
  config.data.max_context_len = 4096
  config.data.max_response_len = 1024
  config.data.min_bucket_len = 1024
  config.batch.size = 8
  config.batch.minibatch_size = 2
  config.batch.grad_accum_steps = 4
  config.ppo.epochs = 4
  config.ppo.gamma = 0.99
  config.ppo.lam = 0.95
  config.ppo.clip_eps = 0.2
  config.ppo.value_clip = 0.2
  config.ppo.vf_coef = 0.1
  config.reward.kl_controller = "adaptive"
  config.reward.init_kl_coef = 0.3
  config.reward.kl_target = 6.0
  config.reward.kl_horizon = 10000.0
  config.optim.learning_rate = 1e-5
  config.train.num_epochs = 5
  config.checkpoint.every_steps = 50
  return config
