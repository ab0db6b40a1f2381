# The two commands in README: `make demo` (the main job) and `make test`. Both set up first.
PYTHON ?= python3

.PHONY: setup demo test lint bench

setup:
	@PYTHON=$(PYTHON) bash scripts/setup.sh

demo: setup
	msae-audit demo --out reports/demo

test: setup
	$(PYTHON) -m pytest -q

lint: setup
	$(PYTHON) -m ruff check audit tests benchmarks

bench: setup
	$(PYTHON) benchmarks/train_step.py
