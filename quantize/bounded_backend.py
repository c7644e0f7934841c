"""The float32 engines as the quantizer runs them: onnxruntime sessions that hold their weights once
(quantize/memory.py: no pre-packed copies, no arena, large files mapped), and only one component at a time when
they do not all fit in half the available memory (the real FLUX.2-4B: prefill 15.5 GB + denoise_step 2.6 GB of
float32). A component's session is then closed before the next is opened; its file stays in the page cache where
memory allows, so re-opening it costs a re-map, not a re-read."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edge.backends.host_loop import HostLoop
from edge.backends.onnxrt import NP_TYPES
from edge.errors import ConfigError

from .calibrate import weights_bytes
from .memory import available_memory_bytes, low_memory_session, release_memory

log = logging.getLogger(__name__)

FIT_FRACTION = 0.5  # of the available memory: all sessions together above this -> one at a time


class BoundedBackend(HostLoop):
    name = "onnxruntime-bounded"

    def __init__(self, engines: str | Path, components: list[str]):
        self.engines = Path(engines)
        self.sizes = {}
        for name in components:
            path = self.engines / f"{name}.onnx"
            if not path.exists():
                raise ConfigError(f"{path} not found: export the engines with `imagewam-edge export` "
                                  f"(components needed: {', '.join(components)})")
            self.sizes[name] = weights_bytes(path)
        self.one_at_a_time = sum(self.sizes.values()) > FIT_FRACTION * available_memory_bytes()
        self.sessions: dict = {}
        self.opened = 0  # sessions created (more than the components: they were swapped)
        self.device = "cpu"

    def _session(self, component: str):
        sess = self.sessions.get(component)
        if sess is None:
            if component not in self.sizes:
                raise ConfigError(f"unknown component {component!r}; this engines directory has {sorted(self.sizes)}")
            if self.one_at_a_time and self.sessions:
                self.sessions.clear()
                release_memory()
            sess = low_memory_session(self.engines / f"{component}.onnx", self.sizes[component])
            self.sessions[component] = sess
            self.opened += 1
        return sess

    def output_names(self, component: str) -> list[str]:
        return [o.name for o in self._session(component).get_outputs()]

    def run(self, component: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sess = self._session(component)
        expected = {i.name: NP_TYPES.get(i.type, np.float32) for i in sess.get_inputs()}
        missing = set(expected) - set(inputs)
        if missing:
            raise ConfigError(f"{component}: missing input(s) {sorted(missing)}")
        feeds = {k: np.ascontiguousarray(inputs[k], dtype=t) for k, t in expected.items()}
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, feeds)))

    def close(self) -> None:
        self.sessions.clear()
        release_memory()


def bounded_policy(engines: str | Path):
    """An ImageWAMPolicy over BoundedBackend (what load_engine_policy builds, with the memory-bounded sessions)."""
    from edge.engines import engine_components, policy_over, read_spec

    engines = Path(engines)
    if not engines.is_dir():
        raise ConfigError(f"engines directory {engines} does not exist; create it with `imagewam-edge export`")
    spec = read_spec(engines)
    return policy_over(engines, spec, BoundedBackend(engines, engine_components(spec)))
