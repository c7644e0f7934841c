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


class ParameterUse(torch.overrides.TorchFunctionMode):
    """Records the parameters a forward pass reads: every torch function or tensor method that receives one (reading
    an attribute such as `.dtype` or `.shape` does not count). Works on the meta device, so a real-size model can be
    measured without memory."""

    def __init__(self):
        super().__init__()
        self.used: dict[int, torch.nn.Parameter] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") != "__get__":
            for a in torch.utils._pytree.tree_leaves((args, kwargs)):
                if isinstance(a, torch.nn.Parameter):
                    self.used[id(a)] = a
        return func(*args, **kwargs)


def parameter_counts(params) -> dict:
    """{"parameters": elements, "parameters_bytes": bytes in their stored dtypes} of distinct parameters."""
    unique = {id(p): p for p in params}.values()
    return {"parameters": int(sum(p.numel() for p in unique)),
            "parameters_bytes": int(sum(p.numel() * p.element_size() for p in unique))}


def run_counting_parameters(module: torch.nn.Module, args: tuple):
    """-> (module(*args) under no_grad, the distinct parameters of `module` that forward read, in module order)."""
    with torch.no_grad(), ParameterUse() as use:
        out = module(*args)
    return out, [p for p in dict((id(p), p) for p in module.parameters()).values() if id(p) in use.used]
