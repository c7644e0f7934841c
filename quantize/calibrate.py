"""Activation ranges for post-training quantization, one component at a time and without copies of the model.

The float32 graph is loaded without its weights, the input tensor of every layer to quantize is added as an extra
output, and onnxruntime runs that graph from memory with the weights read from beside the original file (mapped or
loaded once: quantize/memory.py). Each calibration feed's activations are reduced to their running max |x| at once
and dropped, so the memory is one session plus one feed's activations, however many feeds there are.

Max calibration (symmetric, per tensor), as NVIDIA Model Optimizer's ONNX PTQ does for FP8 and, with its default
128-bin entropy histograms, in effect for INT8 (its KL search has a single candidate there: the max)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from edge.errors import ImageWAMEdgeError


class CalibrationError(ImageWAMEdgeError):
    """Calibration could not measure an activation range."""


def activation_inputs(model, nodes: list[str]) -> list[str]:
    """The activation (first) input of each layer in `nodes`, each tensor once, in graph order."""
    wanted, out = set(nodes), []
    for node in model.graph.node:
        if node.name in wanted and node.input[0] not in out:
            out.append(node.input[0])
    return out


def weights_bytes(path: Path) -> int:
    """Bytes of a component's files (graph + external data)."""
    return sum(f.stat().st_size for f in path.parent.glob(path.name + "*") if f.is_file())


def activation_ranges(path: Path, tensors: list[str], feeds: list[dict], progress: Callable[[str], None] = lambda s: None,
                      ) -> dict[str, float]:
    """max |x| of every tensor in `tensors` over `feeds` (inputs of the float32 component at `path`)."""
    import onnx
    from onnx import TensorProto, helper

    from .memory import low_memory_session, release_memory

    if not feeds:
        raise CalibrationError(f"{path.name}: no calibration feeds captured for this component; the calibration "
                               "observations never ran it")
    model = onnx.load(str(path), load_external_data=False)
    outputs = {o.name for o in model.graph.output}
    types = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.value_info}
    for name in tensors:
        if name not in outputs:
            model.graph.output.append(helper.make_tensor_value_info(name, types.get(name, TensorProto.FLOAT), None))
    session = low_memory_session(path, weights_bytes(path), model=model.SerializeToString())
    del model
    expected = {i.name for i in session.get_inputs()}
    amax = dict.fromkeys(tensors, 0.0)
    try:
        for i, feed in enumerate(feeds, 1):
            missing = expected - set(feed)
            if missing:
                raise CalibrationError(f"{path.name}: calibration feed {i} lacks input(s) {sorted(missing)}")
            values = session.run(tensors, {k: feed[k] for k in expected})
            for name, v in zip(tensors, values):
                m = float(np.abs(v).max()) if v.size else 0.0
                if not np.isfinite(m):
                    raise CalibrationError(f"{path.name}: activation {name!r} is not finite on calibration feed {i}: "
                                           "the float32 engine overflows on these inputs; check the observations")
                amax[name] = max(amax[name], m)
            del values
            if i == len(feeds) or i % max(1, len(feeds) // 4) == 0:
                progress(f"      {path.stem}: calibrated on {i}/{len(feeds)} feeds")
    finally:
        del session
        release_memory()
    return amax
