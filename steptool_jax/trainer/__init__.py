"""The pieces `steptool_jax.train` (PPO) and `steptool_jax.sft` wire together.

One idea per module: the config schema and its checks, the optimizer, the train state and
its shardings, the jitted PPO and SFT updates, the data sources, the initial policy,
checkpoints, metrics, progress, FLOP counts, preemption and the shared training loop.
"""
