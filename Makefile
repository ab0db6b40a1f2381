# The two commands in README: `make demo` (the main job) and `make test`. Both set up first:
# scripts/setup.sh creates .venv (when missing) and installs the pinned versions of constraints.txt.
# `make test PYTHON=/path/to/python` uses (and installs into) another interpreter instead.
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python

.PHONY: setup demo test lint bench

setup:
	@VENV=$(VENV) PYTHON=$(PYTHON) bash scripts/setup.sh

demo: setup
	$(PYTHON) -m audit demo --out reports/demo

test: setup
	$(PYTHON) -m pytest -q

# ruff (style, complexity C901, function length PLR0915) and the import contracts of
# docs/architecture.md (import-linter, configured in pyproject.toml).
lint: setup
	$(PYTHON) -m ruff check audit tests benchmarks examples
	$(PYTHON) -c "from importlinter.cli import lint_imports_command; lint_imports_command()"

bench: setup
	$(PYTHON) benchmarks/train_step.py
