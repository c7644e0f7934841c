"""onnxruntime backend: one InferenceSession per component, outputs written into buffers allocated once per
input-shape signature (IO binding), CPU here; CUDA or TensorRT execution providers where present."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import ConfigError, MissingDependencyError
from ..integrity import IntegrityError, verify_engine_files
from .host_loop import HostLoop

log = logging.getLogger(__name__)

NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
            "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(double)": np.float64}


def default_providers(available: list[str]) -> list[str]:
    order = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for p in order if p in available] or ["CPUExecutionProvider"]


class OnnxRuntimeBackend(HostLoop):
    name = "onnxruntime"

    def __init__(self, engines: str | Path, components: list[str], providers: list[str] | None = None,
                 threads: int = 0, optimization: str = "basic"):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingDependencyError("onnxruntime is not installed: pip install 'imagewam-edge[cpu]' "
                                         "(or onnxruntime-gpu on the Jetson)") from exc
        self.ort = ort
        self.engines = Path(engines)
        self.providers = providers or default_providers(ort.get_available_providers())
        opts = ort.SessionOptions()
        # FP8 Q/DQ graphs break under onnxruntime's extended optimizer before 1.32: BASIC is safe for every graph
        opts.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                         "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[optimization]
        if threads:
            opts.intra_op_num_threads = int(threads)
        # no spin-waiting between kernels: on a robot computer the cores are shared with the control loop, the
        # cameras and the arm controllers, and a spinning pool burns them for a few percent of inference time
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.sessions, self._inputs, self._outputs, self._buffers = {}, {}, {}, {}
        for name in components:
            path = self.engines / f"{name}.onnx"
            if not path.exists():
                raise ConfigError(f"{path} not found: export the engines with `imagewam-edge export` "
                                  f"(components needed: {', '.join(components)})")
        # manifest checksums of what is about to run (cached by size + mtime): a flipped weight byte is refused
        self.verification = verify_engine_files(self.engines, [f"{n}.onnx{ext}" for n in components
                                                               for ext in ("", ".data")])
        for name in components:
            path = self.engines / f"{name}.onnx"
            try:
                sess = ort.InferenceSession(str(path), sess_options=opts, providers=self.providers)
            except Exception as exc:  # onnxruntime raises its own pybind types (InvalidProtobuf, Fail, ...)
                detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
                raise IntegrityError(f"{path}: onnxruntime {ort.__version__} cannot load it ({type(exc).__name__}: "
                                     f"{detail}); the file is truncated, corrupt or not a model this onnxruntime "
                                     "reads. Fix: export it again with `imagewam-edge export`, or copy the engines "
                                     "directory / bundle again") from None
            self.sessions[name] = sess
            self._inputs[name] = {i.name: NP_TYPES.get(i.type, np.float32) for i in sess.get_inputs()}
            self._outputs[name] = [o.name for o in sess.get_outputs()]
        self.device = "cuda" if self.providers[0] != "CPUExecutionProvider" else "cpu"
        log.info("onnxruntime %s, providers %s", ort.__version__, self.providers)

    def output_names(self, component: str) -> list[str]:
        return list(self._outputs[component])

    def run(self, component: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sess = self.sessions[component]
        expected = self._inputs[component]
        missing = set(expected) - set(inputs)
        if missing:
            raise ConfigError(f"{component}: missing input(s) {sorted(missing)}")
        feeds = {k: np.ascontiguousarray(inputs[k], dtype=t) for k, t in expected.items()}
        if self.device != "cpu":
            return dict(zip(self._outputs[component], sess.run(self._outputs[component], feeds)))
        binding = sess.io_binding()
        for k, v in feeds.items():
            binding.bind_cpu_input(k, v)
        signature = (component,) + tuple(v.shape for v in feeds.values())
        buffers = self._buffers.get(signature)
        if buffers is None:  # first call with these shapes: let onnxruntime allocate, then keep those arrays
            for name in self._outputs[component]:
                binding.bind_output(name, "cpu")
            sess.run_with_iobinding(binding)
            outs = [o.numpy() for o in binding.get_outputs()]
            self._buffers[signature] = dict(zip(self._outputs[component], outs))
            return dict(self._buffers[signature])
        for name, buf in buffers.items():
            binding.bind_output(name, "cpu", element_type=buf.dtype, shape=buf.shape, buffer_ptr=buf.ctypes.data)
        sess.run_with_iobinding(binding)
        return dict(buffers)

    def close(self) -> None:
        self.sessions.clear()
        self._buffers.clear()
