#!/usr/bin/env bash
# Run here (a machine with the package registry) before benchmarks/gpu_check.sh travels to a
# GPU machine that reaches nothing: wheels of the packages it lacks into .whl/ (pure Python,
# the versions this project's environment uses), and the cached tiny CLIP into .gpu_cache/
# (else pytest -m cuda trains it there first). Both folders are git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
version() { "$PYTHON" -c "import importlib.metadata as m; print(m.version('$1'))"; }
mkdir -p .whl
rm -f .whl/*.whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
    "open_clip_torch==$(version open_clip_torch)" "ftfy==$(version ftfy)" \
    "wcwidth==$(version wcwidth)"
# The tiny CLIP of the current sources (trained here first if this machine has no copy).
tiny="$(PYTHONPATH="$PWD" "$PYTHON" -c 'from audit.data.tinyclip import tiny_clip; print(tiny_clip().directory)')"
mkdir -p .gpu_cache/tinyclip
rm -rf .gpu_cache/tinyclip/*
cp -r "$tiny" .gpu_cache/tinyclip/
ls -l .whl; du -sh .whl .gpu_cache 2>/dev/null || true
