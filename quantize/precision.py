"""Precision policy, accuracy thresholds and target capabilities: every number the quantizer and the engine
builder decide with lives here.

Kept in high precision whatever the engine precision: embeddings (image/text/time/action/proprio embedders), the
modulation projections, norms and softmax (never quantized: only MatMul/Gemm/Conv weights are), attention's
activation-activation products, the final projections, and the Euler accumulation (numpy float32 in edge/sampler.py)."""
from __future__ import annotations

import ast
from dataclasses import dataclass

from edge.errors import ConfigError
from edge.targets import PRECISIONS, check_precision_supported  # noqa: F401  (re-exported)

QUANTIZED = ("int8", "fp8")

# module-path fragments (from the exporter's name scopes) whose layers stay in high precision
HIGH_PRECISION_SCOPES = (
    "img_in", "txt_in", "time_in", "guidance_in", "proprio_encoder", "action_encoder",  # embedders
    "modulation",  # adaLN projections of the timestep vector (tiny, and they scale everything)
    "final_layer", "head.",  # output projections
    "conv_in", "conv_out", "quant_conv",  # first/last convolutions of the autoencoder
    # the Ovis-U1 autoencoder inside its vision_encoder (which is quantized for its VLM): INT8 convolutions took the
    # image tokens to cosine 0.972 on a real-width slice; FLUX.2 keeps its autoencoder-only vision_encoder FP32 too
    "image_tokenizer",
)
QUANTIZED_OPS = {"vision_encoder": ("Conv", "MatMul", "Gemm"), "prefill": ("MatMul", "Gemm"),
                 "denoise_step": ("MatMul", "Gemm")}


@dataclass(frozen=True)
class Gate:
    """Minimum cosine / maximum error vs FP32 on held-out observations."""

    kv_cosine: float  # prefill keys/values
    tokens_cosine: float  # vision encoder output
    velocity_cosine: float  # one denoise step, same inputs
    action_cosine: float  # whole control step (normalised actions)
    action_mean_abs: float  # whole control step, mean |a_q - a_fp32| in normalised units ([-1, 1] range)


GATES = {
    "fp16": Gate(kv_cosine=0.9999, tokens_cosine=0.9999, velocity_cosine=0.9999, action_cosine=0.9995, action_mean_abs=0.01),
    # BF16 keeps 8 mantissa bits (FP16: 11): measured on the demo engines, the autoencoder at 0.99987 and the prefill /
    # denoise at 0.99995 cosine against FP32 (tests/quantize/test_lowprec.py)
    "bf16": Gate(kv_cosine=0.999, tokens_cosine=0.999, velocity_cosine=0.999, action_cosine=0.995, action_mean_abs=0.03),
    "int8": Gate(kv_cosine=0.995, tokens_cosine=0.995, velocity_cosine=0.995, action_cosine=0.98, action_mean_abs=0.08),
    "fp8": Gate(kv_cosine=0.99, tokens_cosine=0.99, velocity_cosine=0.99, action_cosine=0.97, action_mean_abs=0.12),
}


def gate_for(precision: str) -> Gate:
    if precision not in GATES:
        raise ConfigError(f"no accuracy gate for precision {precision!r}; one of {sorted(GATES)}")
    return GATES[precision]


def node_scopes(node) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                return [str(s) for s in ast.literal_eval(prop.value)]
            except (ValueError, SyntaxError):
                return [prop.value]
    return []


def keep_high_precision(node) -> bool:
    scopes = node_scopes(node)
    return any(frag in scope for scope in scopes for frag in HIGH_PRECISION_SCOPES)


