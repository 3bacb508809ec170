#!/usr/bin/env bash
# XDC Lab's Celery workers.
#   GPUS=0,1,2,3 deploy/worker.sh   one worker owning GPUs 0-3: it runs jobs of 1 to 4 GPUs side by side on GPUs no
#                                   other job holds, consuming queue gpu<g> while g of its GPUs are free
#                                   (workers/gpus.py); up to 4 jobs at once
#   deploy/worker.sh            one worker on queues "cpu" and "gpu1" (a CPU machine, the demo), one job at a time
#   SLURM=1 deploy/worker.sh    the SLURM head-node worker on queue "slurm": it submits jobs with sbatch and
#                               supervises up to SLURM_JOBS (16) of them at once; it needs no GPU
# A job's trainer is a process of its own, a child of the task's thread (it dies with it: PR_SET_PDEATHSIG); the
# pools' threads live as long as the worker. Extra arguments go to `celery worker`.
set -euo pipefail
cd "$(dirname "$0")/.."
CELERY=${CELERY:-.venv/bin/celery}
worker=("$CELERY" -A workers worker --pool solo --concurrency 1 --loglevel "${LOGLEVEL:-info}")

if [ -n "${SLURM:-}" ] && [ "${SLURM}" != 0 ]; then
  exec "$CELERY" -A workers worker --pool threads --concurrency "${SLURM_JOBS:-16}" --loglevel "${LOGLEVEL:-info}" \
    -Q "${QUEUES:-slurm}" -n "slurm@%h" "$@"
fi

if [ -z "${GPUS:-}" ]; then
  exec "${worker[@]}" -Q "${QUEUES:-cpu,gpu1}" -n "cpu@%h" "$@"
fi
# Larger sizes first: a worker with every GPU free serves the queued job that needs them all before small ones.
count=$(tr ',' '\n' <<<"$GPUS" | grep -c .)
queues=$(for ((g = count; g >= 1; g--)); do printf 'gpu%d,' "$g"; done)
export LAB_WORKER_GPUS=$GPUS
exec "$CELERY" -A workers worker --pool threads --concurrency "$count" --loglevel "${LOGLEVEL:-info}" \
  -Q "${QUEUES:-${queues%,}}" -n "gpus@%h" "$@"
