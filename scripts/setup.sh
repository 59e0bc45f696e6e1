#!/usr/bin/env bash
# Sets up a fresh machine for magnet-demo: system packages, a virtual environment in .venv,
# the Python packages, and audiocraft 1.3.0 without its stale pins. Safe to run again: each part
# is skipped when it is already done (a stamp keeps the hash of the requirement files).
#   scripts/setup.sh          runtime packages (run the app)
#   scripts/setup.sh --dev    + test tools (pytest, ruff, gradio_client, playwright, chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
[ "${1:-}" = "--dev" ] && DEV=1
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

# System packages: FluidSynth + General MIDI SoundFonts render the corpus; Chromium runs the
# browser test. Installed only when missing, and only where we may (root or sudo).
apt_packages=(fluidsynth libfluidsynth3 fluid-soundfont-gm timgm6mb-soundfont)
[ $DEV = 1 ] && apt_packages+=(chromium)
missing=()
for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  if [ -z "$SUDO" ] || command -v sudo >/dev/null; then
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: please install ${missing[*]} (apt); continuing without them" >&2
  fi
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.magnet-demo-setup-$DEV
want=$(cat requirements.txt requirements-audiocraft.txt requirements-dev.txt | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch first, alone: with 2.13.0 in place nothing below can pull another build. Where no local
# CPU wheel exists (Docker, a laptop), the Dockerfile sets TORCH_SPEC=torch==2.13.0+cpu and
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu to keep CUDA packages out.
"${pip[@]}" "${TORCH_SPEC:-torch==2.13.0}"
"${pip[@]}" -r requirements.txt
# audiocraft 1.3.0 with --no-deps: its own pins (torch 2.1, xformers, torchaudio < 2.1.2, av 11,
# spacy, ...) cannot be met beside torch 2.13; magnet_demo/compat.py covers what it imports but we
# do not need. The same step app.py takes on a Space (magnet_demo/bootstrap.py).
.venv/bin/python -m magnet_demo.bootstrap
if [ $DEV = 1 ]; then
  "${pip[@]}" -r requirements-dev.txt
fi
echo "$want" > "$stamp"
echo "setup: done (.venv)"
