#!/usr/bin/env bash
# Static type check of the TensorRT code against the published tensorrt-stubs (called by .ci/run; fails on errors).
# The stubs go to .venv/tensorrt-stubs (--target, --no-deps), not into the venv: see requirements/tensorrt-stubs.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
V=.venv/bin/python
STUBS=.venv/tensorrt-stubs
$V -m pip install -q -r requirements/typecheck.txt
$V -m pip install -q --no-deps --upgrade --target "$STUBS" -r requirements/tensorrt-stubs.txt
# tensorrt-stubs 10.13.0.35.1 is generated from the pybind docstrings and does not parse as published: four plugin
# methods name a parameter `in` (a keyword) and add_scale_nd puts a parameter without a default after defaulted
# ones. Rename / default them so mypy can read the file; nothing we call is touched.
sed -i -E 's/([(,] *)in: /\1in_: /g; s/channel_axis: int\) -> IScaleLayer/channel_axis: int = ...) -> IScaleLayer/' \
  "$STUBS/tensorrt_bindings/tensorrt.pyi"
$V -m mypy --config-file requirements/mypy-tensorrt.ini
