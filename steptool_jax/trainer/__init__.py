"""The pieces `steptool_jax.train` (PPO) and `steptool_jax.sft` compose.

    algorithms.py   the PPO and SFT records: data source, update, FLOPs, trainable collections
    policy_init.py  the starting policy on the mesh; state.py the train state and its shardings
    optimizer.py    AdamW and the schedule; flops.py model FLOPs and MFU; distributed.py multi-process
    updates/        the jitted PPO and SFT updates, advantage estimators, gradient accumulation
    sources/        offline data, online rollouts, the built-in environment's data
    run/            the loop, checkpoints, metrics, progress, preemption, the end-of-run summary
"""
