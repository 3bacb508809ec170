# XDC Lab. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The web site's tests run a second time on PostgreSQL (pytest-django creates and drops test_<name> there).
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

.PHONY: install test test-fast demo worker bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "XDC Lab needs Python >= 3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) -m pytest -q -p no:cacheprovider tests/webapp

test-fast: install
	$(PY) -m pytest -q -m "not slow"

demo: install
	bash deploy/demo.sh

# `make worker GPUS=0,1`: one Celery worker per GPU; without GPUS, one worker on the cpu and gpu queues.
worker: install
	GPUS=$(GPUS) bash deploy/worker.sh

bench: install
	$(PY) -m xdc bench --out bench-results

clean:
	rm -rf demo bench-results .pytest_cache
