#!/usr/bin/env bash
# StepTool PPO on a Cloud TPU VM (single host or a multi-host pod slice).
#
#   launch/tpu_vm.sh create            # the TPU VM
#   launch/tpu_vm.sh install           # this checkout + dependencies on every worker, the bucket mounted
#   launch/tpu_vm.sh run [--config.x.y=v ...]   # python -m steptool_jax.train on every worker at once
#   launch/tpu_vm.sh delete
#
# Settings (environment variables):
#   TPU_NAME (steptool), ZONE (us-central2-b), ACCELERATOR_TYPE (v4-16), RUNTIME_VERSION
#   (tpu-ubuntu2204-base), PROJECT (gcloud's default), BUCKET (required for install/run: a GCS
#   bucket mounted at /gcs on every worker with gcsfuse, holding the model and the workdir),
#   CONFIG (configs/llama.py), WORKDIR (/gcs/runs/steptool), MODEL_PATH (/gcs/models/Llama-3.1-8B-Instruct),
#   DATA (optional step-grained TSV, e.g. /gcs/data/train.tsv).
#
# Every worker runs the same command; with more than one host, jax.distributed.initialize()
# finds the others through the TPU metadata (config.distributed = auto), each host loads
# its share of every batch, and process 0 writes metrics. Checkpoints are written by all
# hosts into WORKDIR, which must be the same shared directory for all of them (the bucket).
# A preempted VM gets SIGTERM: the run saves a checkpoint and exits 0; `run` again resumes.
# The mechanism (what runs where, per-host logs, the limits): docs/training.md, "Multi-host".
# The same processes on one machine, one per "host", CPU devices standing in for chips:
#   python -m steptool_jax.launch_local --processes=2 --devices_per_process=4 -- \
#       python -m steptool_jax.train --config=configs/tiny.py:mesh8 --workdir=/tmp/tiny-2x4
set -euo pipefail

TPU_NAME=${TPU_NAME:-steptool}
ZONE=${ZONE:-us-central2-b}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-16}
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
CONFIG=${CONFIG:-configs/llama.py}
WORKDIR=${WORKDIR:-/gcs/runs/steptool}
MODEL_PATH=${MODEL_PATH:-/gcs/models/Llama-3.1-8B-Instruct}
DATA=${DATA:-}
REMOTE_DIR=steptool_jax
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}

tpu() { gcloud compute tpus tpu-vm "$@" --zone="$ZONE" $PROJECT_FLAG; }
on_all_workers() { tpu ssh "$TPU_NAME" --worker=all --command="$1"; }

case "${1:-}" in
  create)
    tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION"
    ;;
  install)
    : "${BUCKET:?set BUCKET to the GCS bucket that holds models and run directories}"
    repo_root=$(cd "$(dirname "$0")/.." && pwd)
    tar -C "$repo_root" --exclude=.git --exclude='*.egg-info' --exclude=__pycache__ -czf /tmp/steptool_jax.tgz .
    tpu scp /tmp/steptool_jax.tgz "$TPU_NAME":~/steptool_jax.tgz --worker=all
    on_all_workers "set -e
      mkdir -p ~/$REMOTE_DIR && tar -C ~/$REMOTE_DIR -xzf ~/steptool_jax.tgz
      python3 -m venv ~/venv && . ~/venv/bin/activate
      pip install -q --upgrade pip && pip install -q -e ~/$REMOTE_DIR 'jax[tpu]'
      if ! command -v gcsfuse >/dev/null; then
        export GCSFUSE_REPO=gcsfuse-\$(lsb_release -c -s)
        echo \"deb https://packages.cloud.google.com/apt \$GCSFUSE_REPO main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list
        curl -s https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add -
        sudo apt-get update -q && sudo apt-get install -y -q gcsfuse
      fi
      sudo mkdir -p /gcs && sudo chown \$USER /gcs
      mountpoint -q /gcs || gcsfuse --implicit-dirs $BUCKET /gcs"
    ;;
  run)
    shift
    extra=("--config.model.path=$MODEL_PATH")
    [[ -n "$DATA" ]] && extra+=("--config.data.train_path=$DATA")
    # Local disk for the tokenised-data cache (memory-mapped: faster than the bucket): process 0
    # tokenises first, then each other host makes its own copy (first run only).
    extra+=("--config.data.cache_dir=/tmp/steptool_cache")
    on_all_workers "cd ~/$REMOTE_DIR && . ~/venv/bin/activate && \
      python -m steptool_jax.train --config=$CONFIG --workdir=$WORKDIR ${extra[*]} $*"
    ;;
  delete)
    tpu delete "$TPU_NAME" --quiet
    ;;
  *)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac
