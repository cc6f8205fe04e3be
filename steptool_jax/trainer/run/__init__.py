"""The run around the updates: the loop (`loop.py`), Orbax checkpoints (`checkpointing.py`),
metrics sinks (`metrics.py`), the progress bar (`progress.py`), SIGTERM (`preemption.py`) and
the end-of-run summary (`summary.py`)."""
