#!/usr/bin/env bash
# Several JAX processes on this machine, each with its own CPU devices: a pod configuration on a laptop.
#
#   launch/local.sh PROCESSES DEVICES_PER_PROCESS COMMAND [ARG ...]
#   launch/local.sh 2 4 python -m steptool_jax.train --config=configs/tiny.py:mesh8 --workdir=/tmp/tiny-2x4
#
# The same as `python -m steptool_jax.launch_local --processes=PROCESSES
# --devices_per_process=DEVICES_PER_PROCESS -- COMMAND ...`, which is the primary form and
# documents the behaviour (prefixed output, first failure stops all, SIGINT/SIGTERM forwarded):
# see docs/training.md, "Multi-host" and its "Local multi-process runs".
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 PROCESSES DEVICES_PER_PROCESS COMMAND [ARG ...]" >&2
  exit 2
fi
processes=$1 devices=$2
shift 2
exec "${PYTHON:-python}" -m steptool_jax.launch_local --processes="$processes" --devices_per_process="$devices" -- "$@"
