#!/usr/bin/env bash
# The demo: a generated audio-visual dataset, a real MLflow server on loopback, and a short XDC pretraining on CPU.
# DEMO_SERVE=0 exits when the run is done; otherwise the MLflow server stays up until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
DEMO_DIR=${DEMO_DIR:-demo}
PORT=${MLFLOW_PORT:-5000}
mkdir -p "$DEMO_DIR"

if [ ! -f "$DEMO_DIR/data/labels.csv" ]; then
  rm -rf "$DEMO_DIR/data"
  $PY -m xdc make-dataset synthetic "$DEMO_DIR/data" --videos 48 --classes 6 --seed 0
fi

if ! $PY - "$PORT" <<'PY'
import socket, sys
s = socket.socket()
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) else 1)
PY
then
  echo "port $PORT is taken; set MLFLOW_PORT to a free port" >&2
  exit 2
fi

.venv/bin/mlflow server --host 127.0.0.1 --port "$PORT" \
  --backend-store-uri "sqlite:///$PWD/$DEMO_DIR/mlflow.db" \
  --artifacts-destination "$PWD/$DEMO_DIR/mlartifacts" >"$DEMO_DIR/mlflow.log" 2>&1 &
MLFLOW_PID=$!
trap 'kill $MLFLOW_PID 2>/dev/null || true' EXIT
for _ in $(seq 60); do
  if $PY -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/health')" 2>/dev/null; then break; fi
  kill -0 $MLFLOW_PID 2>/dev/null || { echo "mlflow server failed; see $DEMO_DIR/mlflow.log" >&2; exit 1; }
  sleep 1
done

export MLFLOW_TRACKING_URI=http://127.0.0.1:$PORT
$PY -m xdc pretrain --data "$DEMO_DIR/data" --variant xdc --preset small --out "$DEMO_DIR/runs/xdc" \
  --set experiment=xdc-demo --set run_name=demo-xdc

RUN_URL=$($PY - <<'PY'
import os
from mlflow.tracking import MlflowClient
client = MlflowClient()
exp = client.get_experiment_by_name("xdc-demo")
run = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
print(f"{os.environ['MLFLOW_TRACKING_URI']}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}"
      f"  ({run.info.status})")
PY
)
echo
echo "XDC run in MLflow: $RUN_URL"
if [ "${DEMO_SERVE:-1}" = "1" ]; then
  echo "MLflow UI at http://127.0.0.1:$PORT — press Ctrl-C to stop."
  wait $MLFLOW_PID
fi
