# The two commands in README: `make demo` (the main job) and `make test`. Both set up first.
PYTHON ?= python3

.PHONY: setup demo test lint bench

setup:
	@PYTHON=$(PYTHON) bash scripts/setup.sh

demo: setup
	msae-audit demo --out reports/demo

test: setup
	$(PYTHON) -m pytest -q

# ruff (style, complexity C901, function length PLR0915) and the import contracts of
# docs/architecture.md (import-linter, configured in pyproject.toml).
lint: setup
	$(PYTHON) -m ruff check audit tests benchmarks
	$(PYTHON) -c "from importlinter.cli import lint_imports_command; lint_imports_command()"

bench: setup
	$(PYTHON) benchmarks/train_step.py
