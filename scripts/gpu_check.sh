#!/usr/bin/env bash
# The one-command GPU check (bench/gpu_check.py): parity with audiocraft on CUDA, magnet-small's
# size timed per step in float32 and bfloat16, one run streamed through the API. No test needs it.
#   scripts/gpu_check.sh                 # in the project's .venv (scripts/setup.sh with CUDA torch)
#   WHEELS=dir scripts/gpu_check.sh      # an offline GPU machine whose python has torch: install the
#                                        # other requirements from a wheelhouse first
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if [ -n "${WHEELS:-}" ]; then
  grep -vE '^\s*(#|$|torch==)' requirements.txt > /tmp/gpu-check-requirements.txt
  "$PY" -m pip install -q --no-index --find-links "$WHEELS" -r /tmp/gpu-check-requirements.txt gradio_client
  "$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-deps -r requirements-audiocraft.txt
fi
exec "$PY" -m bench.gpu_check --device cuda "$@"
