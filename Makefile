# XDC Lab. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The web site's tests run a second time on PostgreSQL (pytest-django creates and drops test_<name> there).
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

.PHONY: install system-packages test test-fast demo worker bench bench-gpu bench-lab gpu-wheels compare clean

install: $(STAMP)

# Debian packages beyond Python (speech and instrument synthesisers for the real-material sets, Redis, Chromium).
system-packages:
	@bash deploy/system-packages.sh

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "XDC Lab needs Python >= 3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install system-packages
	$(PY) -m pytest -q
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) -m pytest -q -p no:cacheprovider tests/webapp

test-fast: install system-packages
	$(PY) -m pytest -q -m "not slow"

demo: install
	SLURM=$(SLURM) exec bash deploy/demo.sh

# `make worker GPUS=0,1,2,3`: one Celery worker owning those GPUs (jobs of 1-4 GPUs side by side); without GPUS, one
# worker on the cpu and gpu1 queues; `make worker SLURM=1`: the SLURM head-node worker (queue slurm).
worker: install
	GPUS=$(GPUS) SLURM=$(SLURM) bash deploy/worker.sh

bench: install
	$(PY) -m xdc bench --out bench-results

# The web site's heavy pages (leaderboard, its API, jobs, a 200-run comparison) on a team of 10,000 jobs: p50/p95 in
# bench-results/lab.json. Creates and drops its own database, xdc_bench_lab, on that PostgreSQL server.
BENCH_LAB_DATABASE_URL ?= $(TEST_DATABASE_URL)
bench-lab: install
	$(PY) manage.py bench_lab --database-url $(BENCH_LAB_DATABASE_URL) --out bench-results/lab.json

# On a bare GPU machine (its own Python and torch, no venv): `xdc bench --device cuda --quick`, inputs generated there;
# PyAV and faiss from the wheels `make gpu-wheels` puts in .whl/ (run that here first and carry .whl/ along).
bench-gpu:
	bash deploy/bench_gpu.sh

# PyAV and faiss-cpu wheels (the versions this venv holds) for a GPU machine's CPython 3.12 on x86-64 Linux.
GPU_PYTHON ?= 3.12
gpu-wheels: install
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
		"av==$$($(PY) -c 'import av; print(av.__version__)')" \
		"faiss-cpu==$$($(PY) -c 'from importlib.metadata import version; print(version("faiss-cpu"))')"

# Every variant (XDC, MDC, CDC, SDC, and the supervised upper bound) with 3 seeds under the same budget (the `small`
# preset) on the generated set and the two real-material sets, measured against random init with the small
# protocols (video linear probe on UCF101 split 1, audio SVM on ESC-50 fold 1); writes compare-results/report.md.
# Resumable. Several hours on 2 CPU cores: narrow it with e.g. COMPARE_ARGS="--sets spoken-digits --seeds 0".
# Not a test.
COMPARE_ARGS ?=
compare: install system-packages
	$(PY) -m xdc compare --out compare-results $(COMPARE_ARGS)

clean:
	rm -rf demo bench-results compare-results .pytest_cache
