#!/usr/bin/env bash
# `make bench-gpu`: the benchmarks on CUDA (`xdc bench --device cuda --quick`) on a bare GPU machine, with no virtual
# environment: the machine's own Python with torch 2.11 / torchvision 0.26 / torchaudio 2.11 (as pinned), numpy,
# scikit-learn, psutil, PyYAML and tqdm. PyAV and faiss-cpu, which such images rarely carry, are installed from the
# wheels in .whl/ (`make gpu-wheels` fetches them where pip reaches PyPI; carry the folder to the GPU machine).
# Every input is generated on the spot. The table is printed; bench.json lands in $BENCH_OUT (default
# ${OUT:-bench-results}/bench-gpu). DEVICE=cpu runs the same path on a CPU, FULL=1 the full sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import av, faiss" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "bench-gpu: PyAV or faiss is missing and .whl/ holds no wheels; run 'make gpu-wheels' where pip reaches PyPI" >&2
    exit 2
  fi
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/xdc-site .whl/*.whl
  export PYTHONPATH=/tmp/xdc-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
sizes=--quick
[ -n "${FULL:-}" ] && sizes=
"$PYTHON" -m xdc bench --device "${DEVICE:-cuda}" $sizes --out "${BENCH_OUT:-${OUT:-bench-results}/bench-gpu}"
