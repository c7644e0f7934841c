"""`prefill` and `denoise` for a backend that only implements `run` (component in, component out): the prefill's
outputs are kept as the backend returned them and fed back to every denoise step; the Euler loop runs in numpy
(FP32). For a CPU backend this moves nothing: host memory is where the backend keeps its tensors."""
from __future__ import annotations

import time

import numpy as np

from ..sampler import euler_sample
from .base import Prefix, Traffic


def nbytes(tensors: dict) -> int:
    return int(sum(getattr(v, "nbytes", 0) for v in tensors.values()))


class HostLoop:
    """Mixin: needs `self.run(component, inputs)`; gives `vision`, `prefill`, `denoise` and a `traffic` counter."""

    where = "host"

    @property
    def traffic(self) -> Traffic:
        if not hasattr(self, "_traffic"):
            self._traffic = Traffic()
        return self._traffic

    def vision(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.run("vision_encoder", inputs)

    def prefill(self, inputs: dict[str, np.ndarray]) -> Prefix:
        out = self.run("prefill", inputs)
        return Prefix(dict(out), nbytes(out), self.where)

    def denoise(self, prefix: Prefix, noise: np.ndarray, sigmas: np.ndarray) -> tuple[np.ndarray, list[float]]:
        step_ms: list[float] = []
        clock = time.perf_counter

        def velocity(x, sigma, i):
            t0 = clock()
            out = self.run("denoise_step", {"x": x, "sigma": np.array([sigma], np.float32), **prefix.tensors})
            step_ms.append((clock() - t0) * 1e3)
            return out["velocity"]

        return euler_sample(noise, velocity, sigmas), step_ms


class RunOnly(HostLoop):
    """Any backend seen through `run` alone: `vision`, `prefill` and `denoise` become component calls on host
    arrays (what calibration capture and the accuracy gate need to see every input each component receives)."""

    def __init__(self, inner):
        self.inner, self.name = inner, getattr(inner, "name", "backend")

    def run(self, component: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.inner.run(component, inputs)

    def close(self) -> None:
        self.inner.close()
