"""Deployment targets and what their GPUs can run (DESIGN §3-4). Pure data and checks; no GPU needed."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

PRECISIONS = ("fp32", "fp16", "int8", "fp8")


@dataclass(frozen=True)
class Target:
    name: str
    compute_capability: tuple[int, int]
    jetpack: str
    cuda: str
    tensorrt: str
    python: str
    l4t_base: str  # container base image

    @property
    def fp8(self) -> bool:
        return self.compute_capability >= (8, 9)


TARGETS = {
    "orin": Target("Jetson AGX Orin / Orin NX / Orin Nano", (8, 7), "6.2", "12.6", "10.3", "3.10",
                   "nvcr.io/nvidia/l4t-tensorrt:r10.3.0-runtime"),
    "thor": Target("Jetson AGX Thor", (11, 0), "7.0", "13.0", "10.13", "3.12", "nvcr.io/nvidia/tensorrt:25.08-py3-igpu"),
}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise ConfigError(f"unknown target {name!r}; one of {sorted(TARGETS)}") from None


def allowed_precisions(compute_capability: tuple[int, int]) -> list[str]:
    return [p for p in PRECISIONS if p != "fp8" or tuple(compute_capability) >= (8, 9)]


def check_precision_supported(precision: str, compute_capability: tuple[int, int]) -> None:
    """FP8 tensor cores need sm_89+; Jetson Orin is sm_87: refuse with the way out."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: one of {PRECISIONS}")
    if precision == "fp8" and tuple(compute_capability) < (8, 9):
        major, minor = compute_capability
        raise ConfigError(f"FP8 engines need compute capability 8.9 or newer; this GPU is {major}.{minor} "
                          f"({'Jetson Orin' if (major, minor) == (8, 7) else 'too old for FP8'}). "
                          "Quantize to INT8 instead: imagewam-edge quantize --precision int8 ...")
