"""Peak numbers of common accelerators, for MFU and bandwidth-bound estimates.

Dense bf16 matmul peaks and HBM bandwidths from the vendors' data sheets. Unknown devices
(e.g. CPU) return None; pass `--peak_tflops` / `--hbm_gbps` to the benchmarks instead.
"""

from __future__ import annotations

import jax

# device_kind substring -> (dense bf16 TFLOP/s, HBM GB/s); first match wins.
_SPECS: tuple[tuple[str, float, float], ...] = (
    ("H200", 989.0, 4800.0),
    ("H100 PCIe", 756.0, 2000.0),
    ("H100", 989.0, 3350.0),  # SXM
    ("A100-SXM4-80GB", 312.0, 2039.0),
    ("A100", 312.0, 1555.0),
    ("L4", 121.0, 300.0),
    ("TPU v6", 918.0, 1640.0),
    ("TPU v5p", 459.0, 2765.0),
    ("TPU v5 lite", 197.0, 819.0),
    ("TPU v5e", 197.0, 819.0),
    ("TPU v4", 275.0, 1228.0),
)


def device_peaks(device: jax.Device | None = None) -> tuple[float | None, float | None]:
  """(peak bf16 FLOP/s, HBM bytes/s) of one device, or (None, None) when unknown."""
  kind = (device or jax.devices()[0]).device_kind
  for name, tflops, gbps in _SPECS:
    if name.lower() in kind.lower():
      return tflops * 1e12, gbps * 1e9
  return None, None
