#!/usr/bin/env bash
# Install ImageWAM Edge on a CPU workstation (Debian/Ubuntu, Python >= 3.10) into ./.venv, then run the embedded
# default. torch goes in FIRST as a CPU wheel so nothing later pulls a multi-GB CUDA build.
#   bash scripts/install.sh            install + run the demo
#   bash scripts/install.sh --no-run   install only (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ldconfig -p 2>/dev/null | grep -q "libusb-1.0.so.0"; then   # pyrealsense2 needs libusb to import
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libusb-1.0-0 >/dev/null
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
V=.venv/bin/python
if ! $V -c "import torch" 2>/dev/null; then
  echo "== installing torch (CPU build)"
  $V -m pip install -q "torch==2.13.0" 2>/dev/null || $V -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
fi
echo "== installing imagewam-edge with all workstation extras"
$V -m pip install -q -e ".[all]"
echo "== LeRobot v3 dataset interop (lerobot without its own pins, which would replace torch and numpy)"
$V -m pip freeze | grep -v -e '^-e ' -e ' @ ' -e '^fsspec==' > .venv/pins.txt   # keep every installed version
$V -m pip install -q -c .venv/pins.txt -e ".[lerobot]" && $V -m pip install -q --no-deps "lerobot==0.4.4"
if [ "${1:-}" != "--no-run" ]; then
  echo "== the embedded default: simulated camera and arm controller, tiny demo model on onnxruntime (CPU)"
  .venv/bin/imagewam-edge run --seconds 20
fi
