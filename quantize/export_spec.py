"""What a model variant hands to the exporter: one `ExportComponent` per engine (vision_encoder, prefill,
denoise_step, ...). The exporter (quantize/export.py) turns each into an ONNX file with named tensors and a
metadata JSON, and checks onnxruntime against the module on the example inputs."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class ExportComponent:
    name: str  # file stem and backend component name, e.g. "prefill"
    module: torch.nn.Module  # forward(*inputs in `inputs` order) -> tuple of outputs in `outputs` order
    inputs: dict[str, np.ndarray]  # example inputs, in forward order (float32 / int64)
    outputs: list[str]
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)  # input/output name -> {axis: symbol}
    ranges: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # symbol -> (min, opt, max) for engines
    optional: bool = False  # off the control path (e.g. the text encoder): exported only when asked
    quantize: bool = True  # worth quantizing (large MatMuls)
    notes: str = ""
