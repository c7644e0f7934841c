#!/usr/bin/env bash
# Install ImageWAM Edge and everything it needs on a CPU workstation (Debian/Ubuntu, Python >= 3.10).
# torch goes FIRST with an explicit CPU wheel so nothing later pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install "torch==2.13.0" || "$PY" -m pip install torch --index-url https://download.pytorch.org/whl/cpu
fi
"$PY" -m pip install -e ".[all]"
if [ "${1:-}" != "--no-run" ]; then
  imagewam-edge run
fi
