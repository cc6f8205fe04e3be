"""Run configurations: `--config=configs/<name>.py[:variant]` (files returning an ml_collections.ConfigDict)."""
