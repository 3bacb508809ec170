#!/usr/bin/env bash
# The demo: the whole lab on one machine with nothing else installed. A generated audio-visual dataset registered
# in the lab, SQLite for the site, a broker of its own (a private redis-server, or kombu's filesystem transport when
# redis-server is absent), an MLflow server, a Celery worker and the web site, all on loopback; then a small XDC
# pretraining that fans out to two evaluations when it succeeds.
# DEMO_SERVE=0 exits when the jobs are done; otherwise everything stays up until Ctrl-C.
# MLFLOW_PORT / WEB_PORT pick other ports; DEMO_BROKER=filesystem forces the fallback broker.
# SLURM=1 also starts a two-node SLURM cluster on loopback (deploy/slurm_loopback.py; slurm-wlm and munge are
# installed first if missing) with the lab's head-node worker, and submits a 2-node pretraining to it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$PWD/.venv/bin/python
DEMO_DIR=${DEMO_DIR:-demo}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
WEB_PORT=${WEB_PORT:-8000}
mkdir -p "$DEMO_DIR"
DEMO=$(cd "$DEMO_DIR" && pwd)

# Every process this script starts leads its own process group. On exit (Ctrl-C included) they stop in order: the
# workers first, with a warm shutdown while the broker, MLflow and the site are still up (a running job checkpoints,
# ends its MLflow run KILLED and goes back to the queue; the broker keeps its messages in $DEMO, so the next `make
# demo` resumes it), then the rest. SIGTERM, then SIGKILL to a group still there after its grace (a worker killed so
# leaves its job running: the next demo's watchdog requeues it after LAB_STALE_SECONDS); a second Ctrl-C skips the
# graces. A clean stop exits 0.
workers=() others=() waiter=""
declare -A names=()
export LAB_STOP_GRACE_SECONDS=${LAB_STOP_GRACE_SECONDS:-60}  # a trainer's time to checkpoint once asked to stop
alive() { local pid; for pid; do kill -0 -- "-$pid" 2>/dev/null && return 0; done; return 1; }
hurry=0
stop_groups() {  # stop_groups SECONDS PID...: SIGTERM each group; 1 if one had to be killed after SECONDS
  local seconds=$1 pid ticks; shift
  [ $# -gt 0 ] || return 0
  for pid; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for ((ticks = seconds * 5; ticks > 0 && hurry == 0; ticks--)); do alive "$@" || return 0; sleep 0.2; done
  alive "$@" || return 0
  for pid; do
    alive "$pid" && echo "${names[$pid]} had not stopped: killed" >&2
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  return 1
}
stop_all() {
  trap - EXIT
  trap 'hurry=1' INT TERM
  local clean=0
  [ -z "$waiter" ] || kill "$waiter" 2>/dev/null || true
  stop_groups $((LAB_STOP_GRACE_SECONDS + 30)) "${workers[@]}" || clean=1
  stop_groups 30 "${others[@]}" || clean=1  # MLflow's job consumers take seconds to end
  wait 2>/dev/null || true
  return $clean
}
trap stop_all EXIT  # an error or the end: the exit status stays the script's
trap 'echo; echo "stopping the demo: the worker first (a running job checkpoints and goes back to the queue;" \
  "Ctrl-C again stops at once)..."; stop_all && exit 0; exit 1' INT TERM
start() {  # start NAME COMMAND...: run COMMAND in a new session, its output in $DEMO/NAME.log
  local name=$1; shift
  setsid "$@" >"$DEMO/$name.log" 2>&1 &
  last=$!
  names[$last]=$name
  case $name in *worker) workers+=("$last") ;; *) others+=("$last") ;; esac
}
port_free() {
  $PY -c "import socket, sys; sys.exit(not socket.socket().connect_ex(('127.0.0.1', int(sys.argv[1]))))" "$1"
}
free_port() { $PY -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
wait_http() {  # wait_http NAME URL PID
  for _ in $(seq 120); do
    $PY -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$2" 2>/dev/null && return
    if ! kill -0 "$3" 2>/dev/null; then
      echo "$1 failed to start; see $DEMO/$1.log" >&2
      tail -n 20 "$DEMO/$1.log" >&2
      exit 1
    fi
    sleep 1
  done
  echo "$1 did not answer at $2 within two minutes; see $DEMO/$1.log" >&2
  exit 1
}
for port in "$MLFLOW_PORT" "$WEB_PORT"; do
  port_free "$port" || { echo "port $port is taken; set MLFLOW_PORT / WEB_PORT to free ports" >&2; exit 2; }
done

# The lab's settings for the demo: everything under $DEMO, on loopback.
export LAB_VAR_DIR=$DEMO/var LAB_DATA_ROOTS=$DEMO/data DATABASE_URL="" LAB_ENQUEUE=celery LAB_STALE_SECONDS=60 LAB_WATCHDOG_SECONDS=20
export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT DEMO_SITE_URL=http://127.0.0.1:$WEB_PORT
unset MLFLOW_UI_URL REDIS_URL

if [ ! -f "$DEMO/data/labels.csv" ]; then
  rm -rf "$DEMO/data"
  $PY -m xdc make-dataset synthetic "$DEMO/data" --videos 480 --classes 6 --seed 0
fi
$PY manage.py migrate --noinput >"$DEMO/migrate.log" 2>&1 || { cat "$DEMO/migrate.log" >&2; exit 1; }
$PY deploy/demo_lab.py setup "$DEMO/data"

if command -v redis-server >/dev/null && [ "${DEMO_BROKER:-redis}" != filesystem ]; then
  REDIS_PORT=$(free_port)
  start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly yes --dir "$DEMO"
  export CELERY_BROKER_URL=redis://127.0.0.1:$REDIS_PORT/0
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.2; done
else  # no priorities, and a killed worker's job comes back through the stale-job watchdog only
  export CELERY_BROKER_URL=filesystem:// CELERY_BROKER_DIR=$DEMO/broker
fi
echo "broker: $CELERY_BROKER_URL"

if [ -n "${SLURM:-}" ] && [ "$SLURM" != 0 ]; then
  $PY -c "import sys; from deploy.slurm_loopback import missing; sys.exit(bool(missing()))" ||
    bash deploy/system-packages.sh
  start slurm $PY deploy/slurm_loopback.py "$DEMO/slurm"
  for _ in $(seq 120); do grep -q '^SLURM_CONF=' "$DEMO/slurm.log" && break; kill -0 "$last" || break; sleep 0.5; done
  grep -q '^SLURM_CONF=' "$DEMO/slurm.log" || { echo "the SLURM cluster did not start; see $DEMO/slurm.log" >&2; exit 1; }
  export SLURM_CONF=$DEMO/slurm/slurm.conf
  echo "SLURM: two nodes on loopback, $SLURM_CONF"
fi

start mlflow .venv/bin/mlflow server --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
  --backend-store-uri "sqlite:///$DEMO/mlflow.db" --artifacts-destination "$DEMO/mlartifacts"
MLFLOW_PID=$last
start web $PY manage.py runserver "127.0.0.1:$WEB_PORT" --noreload
WEB_PID=$last
# The workers once MLflow answers: a job the last demo left in the queue starts at once, and reports to it.
wait_http mlflow "$MLFLOW_TRACKING_URI/health" "$MLFLOW_PID"
SLURM= start worker bash deploy/worker.sh
if [ -n "${SLURM_CONF:-}" ]; then
  SLURM=1 start slurm-worker bash deploy/worker.sh
fi
wait_http web "$DEMO_SITE_URL/healthz" "$WEB_PID"

JOB=$($PY deploy/demo_lab.py submit ${SLURM_CONF:+--slurm})
cat <<EOF

XDC Lab is up (logs in $DEMO/*.log):
  site     $DEMO_SITE_URL   log in as demo / xdc-demo-lab
  job      $DEMO_SITE_URL/jobs/$JOB/   (a small XDC pretraining; on success it queues UCF101 and ESC-50 evaluations;
           random-init baselines of both follow${SLURM_CONF:+; and a 2-node pretraining placed by SLURM})
  MLflow   $MLFLOW_TRACKING_URI

EOF
if [ "${DEMO_SERVE:-1}" = "0" ]; then  # in the background, so Ctrl-C reaches the trap at once
  $PY deploy/demo_lab.py wait "$JOB" &
  waiter=$!
  status=0
  wait "$waiter" || status=$?
  waiter=""
  exit $status
fi
echo "Press Ctrl-C to stop every process the demo started."
wait -n "${workers[@]}" "${others[@]}" || true
echo "a demo process exited; stopping the others (see the logs in $DEMO)" >&2
exit 1
