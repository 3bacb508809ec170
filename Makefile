# XDC Lab. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The web site's tests run a second time on PostgreSQL (pytest-django creates and drops test_<name> there).
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

.PHONY: install test test-fast demo worker bench compare clean

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

# XDC, SDC and a supervised model (labels, the upper bound) pretrained with the same budget (the `small` preset) on
# a generated set, then measured with random init under the same tiny protocols: video linear, retrieval (kNN) and
# fine-tuning on its UCF101 split 1, audio SVM on its ESC-50 fold 1. About 15 minutes on 2 CPU cores. Not a test.
COMPARE := compare-results
compare: install
	test -f $(COMPARE)/data/labels.csv || $(PY) -m xdc make-dataset synthetic $(COMPARE)/data --videos 480 --seed 0
	for variant in xdc sdc supervised; do \
	  $(PY) -m xdc pretrain --data $(COMPARE)/data/ucf101 --variant $$variant --out $(COMPARE)/$$variant \
	    --preset small --layout ucf101 --no-track --quiet \
	  || exit 1; done
	for ckpt in xdc/final.pt sdc/final.pt supervised/final.pt random; do \
	  case $$ckpt in random) ckpt_arg="random --set width=16";; *) ckpt_arg=$(COMPARE)/$$ckpt;; esac; \
	  for protocol in linear retrieval finetune; do \
	    $(PY) -m xdc evaluate --checkpoint $$ckpt_arg --benchmark ucf101 --data $(COMPARE)/data/ucf101 --split 1 \
	      --protocol $$protocol --preset tiny --no-track --quiet --out $(COMPARE)/eval/$${ckpt%%/*}-$$protocol || exit 1; \
	  done; \
	  $(PY) -m xdc evaluate --checkpoint $$ckpt_arg --benchmark esc50 --data $(COMPARE)/data/esc50 --split 1 \
	    --protocol svm --preset tiny --no-track --quiet --out $(COMPARE)/eval/$${ckpt%%/*}-svm || exit 1; \
	done

clean:
	rm -rf demo bench-results compare-results .pytest_cache
