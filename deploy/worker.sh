#!/usr/bin/env bash
# XDC Lab's Celery workers: one job at a time per worker.
#   GPUS=0,1 deploy/worker.sh   one worker per GPU, each on queue "gpu" with CUDA_VISIBLE_DEVICES set to its GPU
#   deploy/worker.sh            one worker on queues "cpu" and "gpu" (a CPU machine, the demo)
# The solo pool runs the job in the worker process itself: PyTorch's DataLoader workers cannot start inside a
# prefork pool child (a daemonic process). Extra arguments go to every `celery worker`.
set -euo pipefail
cd "$(dirname "$0")/.."
CELERY=${CELERY:-.venv/bin/celery}
worker=("$CELERY" -A workers worker --pool solo --concurrency 1 --loglevel "${LOGLEVEL:-info}")

if [ -z "${GPUS:-}" ]; then
  exec "${worker[@]}" -Q "${QUEUES:-cpu,gpu}" -n "cpu@%h" "$@"
fi
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM
for gpu in ${GPUS//,/ }; do
  CUDA_VISIBLE_DEVICES=$gpu "${worker[@]}" -Q "${QUEUES:-gpu}" -n "gpu$gpu@%h" "$@" &
  pids+=($!)
done
until wait; do :; done  # a trapped signal interrupts `wait`; keep waiting while the workers finish their jobs
