"""The jitted updates: PPO (`ppo.py`) and SFT (`sft.py`), the advantage estimators PPO asks
(`advantages.py`), and what both share: gradient accumulation (`accumulate.py`) and row
layout helpers (`rows.py`)."""
