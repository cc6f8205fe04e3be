"""Where training batches come from: fixed tokenised data (`offline.py`), episodes the current
policy plays (`online.py`), the built-in environment's generated data (`env_data.py`), and the
interface and device placement they share (`batches.py`)."""
