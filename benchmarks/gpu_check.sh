#!/usr/bin/env bash
# The GPU check: one run, one JSON + Markdown summary (see benchmarks/gpu_check.py).
#
#   bash benchmarks/gpu_check.sh [--out DIR]   # on one CUDA GPU, under 8 minutes, no network
#   bash benchmarks/gpu_check.sh --smoke       # toy sizes, any machine (a test runs this)
#
# Packages the GPU machine lacks travel as wheels in .whl/ and the tiny CLIP's cache in
# .gpu_cache/ (benchmarks/gpu_prepare.sh puts both there); both are optional.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if compgen -G ".whl/*.whl" >/dev/null; then
    site="${TMPDIR:-/tmp}/msae-audit-site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" .whl/*.whl || exit 2
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -d .gpu_cache ]; then
    export MSAE_AUDIT_CACHE="$PWD/.gpu_cache"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export MSAE_AUDIT_NO_DOWNLOAD=1 PYTHONUNBUFFERED=1
exec "$PYTHON" benchmarks/gpu_check.py "$@"
