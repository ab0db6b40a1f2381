#!/usr/bin/env bash
# One-time, idempotent set-up used by `make demo` and `make test`:
#   * a virtual environment .venv in the repository (created when missing, from $BASE_PYTHON,
#     default python3), with msae-audit and its dev tools installed at the versions pinned in
#     constraints.txt, exactly as CI and a new user get them;
#   * Debian's headless Chromium for the HTML report tests (when running as root and it is missing).
# PYTHON=/path/to/python installs into that interpreter's environment instead of .venv
# (`make test PYTHON=...`); MSAE_SKIP_INSTALL=1 uses it as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-$VENV/bin/python}
BASE_PYTHON=${BASE_PYTHON:-python3}
STAMP=.setup-stamp

if [ "$PYTHON" = "$VENV/bin/python" ] && [ ! -x "$PYTHON" ]; then
  echo "setup: creating the virtual environment $VENV (from $("$BASE_PYTHON" --version 2>&1))" >&2
  "$BASE_PYTHON" -m venv "$VENV"
fi

# Reinstall when the declared or pinned versions change, or for another interpreter.
wanted="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16) $PYTHON"
if [ "${MSAE_SKIP_INSTALL:-0}" != "1" ] \
  && { [ "$(cat "$STAMP" 2>/dev/null)" != "$wanted" ] \
       || ! "$PYTHON" -c "import audit, pytest, hypothesis" 2>/dev/null; }; then
  echo "setup: installing msae-audit and its dev tools into $PYTHON (pinned: constraints.txt;" \
       "first run: a few minutes, torch is large)" >&2
  # torch's Linux build brings its CUDA libraries: about 6 GB in the environment. Say so up front
  # when the disk is short, and name the disk when pip fails, instead of only pip's OSError.
  site="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  free_mb=$(df -Pm "$site" 2>/dev/null | awk 'NR==2 {print $4}')
  if ! "$PYTHON" -c "import torch" 2>/dev/null && [ -n "$free_mb" ] && [ "$free_mb" -lt 7000 ]; then
    echo "setup: warning: ${free_mb} MB free where packages go ($site); torch with its CUDA" \
         "libraries needs about 6,500 MB" >&2
  fi
  if ! "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
      -c constraints.txt -e '.[dev]'; then
    free_mb=$(df -Pm "$site" 2>/dev/null | awk 'NR==2 {print $4}')
    echo "setup: pip install failed (${free_mb:-?} MB now free where packages go: $site)" >&2
    exit 2
  fi
  echo "$wanted" > "$STAMP"
fi

if [ "${MSAE_SKIP_BROWSER:-0}" != "1" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's chromium for the headless browser tests" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: chromium not found; the browser tests will be skipped (install Debian's 'chromium')" >&2
  fi
fi
