#!/usr/bin/env bash
# XDC Lab's Celery workers: one job at a time per worker.
#   GPUS=0,1 deploy/worker.sh   one worker per GPU, each on queue "gpu" with CUDA_VISIBLE_DEVICES set to its GPU
#   deploy/worker.sh            one worker on queues "cpu" and "gpu" (a CPU machine, the demo)
#   SLURM=1 deploy/worker.sh    the SLURM head-node worker on queue "slurm": it submits jobs with sbatch and
#                               supervises up to SLURM_JOBS (16) of them at once; it needs no GPU
# A local job's trainer is a child of the task's thread (it dies with it: PR_SET_PDEATHSIG), so local workers run
# one job at a time on the solo pool. Extra arguments go to every `celery worker`.
set -euo pipefail
cd "$(dirname "$0")/.."
CELERY=${CELERY:-.venv/bin/celery}
worker=("$CELERY" -A workers worker --pool solo --concurrency 1 --loglevel "${LOGLEVEL:-info}")

if [ -n "${SLURM:-}" ] && [ "${SLURM}" != 0 ]; then
  exec "$CELERY" -A workers worker --pool threads --concurrency "${SLURM_JOBS:-16}" --loglevel "${LOGLEVEL:-info}" \
    -Q "${QUEUES:-slurm}" -n "slurm@%h" "$@"
fi

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
