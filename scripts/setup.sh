#!/usr/bin/env bash
# One-time, idempotent set-up used by `make demo` and `make test`:
#   * the package with its dev tools (pip; torch comes from the local wheel cache where pip is capped),
#   * Debian's headless Chromium for the HTML report tests (when running as root and it is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -f .setup-stamp ] || [ pyproject.toml -nt .setup-stamp ] || ! "$PYTHON" -c "import audit, pytest, hypothesis" 2>/dev/null; then
  echo "setup: installing msae-audit and its dev tools (first run: a few minutes, torch is large)" >&2
  "$PYTHON" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
  touch .setup-stamp
fi

if [ "${MSAE_SKIP_BROWSER:-0}" != "1" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's chromium for the headless browser tests" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: chromium not found; the browser tests will be skipped (install Debian's 'chromium')" >&2
  fi
fi
