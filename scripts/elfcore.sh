#!/usr/bin/env bash
# Set up everything elfcore needs on a fresh Debian machine, then serve the app or run the tests.
#
#   bash scripts/elfcore.sh serve   # set up what serving needs (the Python environment), then
#                                   # `panel serve app/main.py` on the bundled data
#   bash scripts/elfcore.sh test    # set up everything, then run the whole test suite
#   bash scripts/elfcore.sh setup   # only set up everything
#
# `setup` and `test` also install Debian packages: Chromium (browser tests), CP2K and Quantum ESPRESSO
# (reference calculations). Serving the app needs none of them, so `serve` installs no Debian package.
#
# Idempotent: every step is skipped when already done. The virtual environment lives in .venv
# (override with ELFCORE_VENV). Environment: PORT (default 5006), ADDRESS (default 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ELFCORE_VENV:-.venv}"
PY="$VENV/bin/python"

apt_install() {
  local missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium chromium-driver)
  command -v cp2k.psmp >/dev/null 2>&1 || command -v cp2k >/dev/null 2>&1 || missing+=(cp2k cp2k-data)
  command -v pw.x >/dev/null 2>&1 || missing+=(quantum-espresso)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "[elfcore] installing Debian packages: ${missing[*]}" >&2
    local SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" openmpi-bin >/dev/null
  fi
}

py_install() {
  if [ ! -x "$PY" ]; then
    echo "[elfcore] creating virtual environment $VENV" >&2
    python3 -m venv "$VENV"
  fi
  if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
      echo "[elfcore] installing torch (CUDA build)" >&2
      "$PY" -m pip install -q "torch>=2.3"
    else
      echo "[elfcore] installing torch (CPU build)" >&2
      "$PY" -m pip install -q "torch==2.13.0" || "$PY" -m pip install -q "torch>=2.3" \
        --index-url https://download.pytorch.org/whl/cpu
    fi
  fi
  local stamp="$VENV/.elfcore-installed"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "[elfcore] installing elfcore and its dependencies" >&2
    "$PY" -m pip install -q -e ".[app,test,reference]"
    touch "$stamp"
  fi
}

setup() { apt_install; py_install; }

cmd="${1:-serve}"
shift || true
case "$cmd" in
  setup)
    setup ;;
  serve)
    py_install
    # --websocket-max-message-size = app.pipeline.WEBSOCKET_MAX_MESSAGE_BYTES (uploads travel base64-encoded)
    exec "$VENV/bin/panel" serve app/main.py --address "${ADDRESS:-127.0.0.1}" --port "${PORT:-5006}" \
      --websocket-max-message-size 134217728 \
      --allow-websocket-origin="${ADDRESS:-127.0.0.1}:${PORT:-5006}" --allow-websocket-origin="localhost:${PORT:-5006}" "$@" ;;
  test)
    setup
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
    set +e
    "$PY" -m pytest -m "not gpu" "$@"
    rc=$?
    set -e
    if [ $rc -eq 5 ]; then echo "[elfcore] no tests were collected" >&2; exit 1; fi
    exit $rc ;;
  *)
    echo "usage: bash scripts/elfcore.sh {serve|test|setup} [extra args]" >&2; exit 2 ;;
esac
