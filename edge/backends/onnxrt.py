"""onnxruntime backend: one InferenceSession per component, IO binding throughout. CPU here; CUDA or TensorRT
execution providers where present (onnxruntime-gpu).

On the CPU provider the prefill writes its K/V into host buffers allocated once per input-shape signature and the
denoise session reads those same buffers (bound once per control step, zero copies). With onnxruntime-gpu the
prefill's outputs are OrtValues allocated on the CUDA device and bound as the denoise inputs by reference: the K/V
never visit the host; only x and sigma (448 + 4 bytes at 16x7 actions) go up and the velocity comes down per step,
the Euler update stays on the host in FP32 (`traffic` counts every byte)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..errors import ConfigError, MissingDependencyError
from ..integrity import IntegrityError, verify_engine_files
from .base import Prefix
from .host_loop import HostLoop, nbytes

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
        self.sessions, self._inputs, self._outputs, self._buffers, self._output_types = {}, {}, {}, {}, {}
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
            self._output_types[name] = {o.name: NP_TYPES.get(o.type, np.float32) for o in sess.get_outputs()}
        self.device = "cuda" if self.providers[0] != "CPUExecutionProvider" else "cpu"
        self.device_id = 0
        log.info("onnxruntime %s, providers %s", ort.__version__, self.providers)

    def _h2d(self, stage: str, arrays) -> None:
        if self.device != "cpu":
            self.traffic.add(stage, h2d=sum(int(a.nbytes) for a in arrays))

    def _d2h(self, stage: str, arrays) -> None:
        if self.device != "cpu":
            self.traffic.add(stage, d2h=sum(int(a.nbytes) for a in arrays))

    def _feeds(self, component: str, inputs: dict) -> dict[str, np.ndarray]:
        expected = self._inputs[component]
        missing = set(expected) - set(inputs)
        if missing:
            raise ConfigError(f"{component}: missing input(s) {sorted(missing)}")
        return {k: np.ascontiguousarray(inputs[k], dtype=t) for k, t in expected.items()}

    def prefill(self, inputs: dict[str, np.ndarray]) -> Prefix:
        """K/V into buffers the backend keeps (host buffers on the CPU provider, CUDA OrtValues on onnxruntime-gpu)."""
        if self.device == "cpu":
            out = self.run("prefill", inputs)
            return Prefix(out, nbytes(out), "host")
        sess = self.sessions["prefill"]
        feeds = self._feeds("prefill", inputs)
        binding = sess.io_binding()
        for k, v in feeds.items():
            binding.bind_cpu_input(k, v)  # onnxruntime uploads it
        self._h2d("prefill", feeds.values())
        for name in self._outputs["prefill"]:
            binding.bind_output(name, "cuda", self.device_id)
        sess.run_with_iobinding(binding)
        values = dict(zip(self._outputs["prefill"], binding.get_outputs()))  # OrtValues on the device
        size = sum(int(np.prod(v.shape())) * np.dtype(NP_TYPES.get(v.data_type(), np.float32)).itemsize
                   for v in values.values())
        return Prefix(values, size, "device")

    def denoise(self, prefix: Prefix, noise: np.ndarray, sigmas: np.ndarray) -> tuple[np.ndarray, list[float]]:
        """The Euler loop with the K/V bound ONCE for all steps (by reference: no copy on either provider)."""
        sess = self.sessions["denoise_step"]
        binding = sess.io_binding()
        for name, value in prefix.tensors.items():
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_ortvalue_input(name, value)
        out_name = self._outputs["denoise_step"][0]
        step_ms: list[float] = []
        clock = time.perf_counter
        x = np.array(noise, dtype=np.float32, copy=True)  # the FP32 accumulator
        x_type, v_type = self._inputs["denoise_step"]["x"], self._output_types["denoise_step"][out_name]
        velocity = np.empty(x.shape, v_type)
        sigma = np.zeros(1, self._inputs["denoise_step"]["sigma"])
        binding.bind_output(out_name, "cpu", element_type=v_type, shape=velocity.shape,
                            buffer_ptr=velocity.ctypes.data)
        for i in range(len(sigmas) - 1):
            t0 = clock()
            sigma[0] = sigmas[i]
            x_in = x if x_type == np.float32 else x.astype(x_type)
            binding.bind_cpu_input("x", x_in)
            binding.bind_cpu_input("sigma", sigma)
            self._h2d("denoise", (x_in, sigma))
            sess.run_with_iobinding(binding)
            self._d2h("denoise", (velocity,))
            x += velocity.astype(np.float32, copy=False) * np.float32(sigmas[i + 1] - sigmas[i])  # FP32 as euler_sample
            step_ms.append((clock() - t0) * 1e3)
        return x, step_ms

    def output_names(self, component: str) -> list[str]:
        return list(self._outputs[component])

    def run(self, component: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sess = self.sessions[component]
        feeds = self._feeds(component, inputs)
        if self.device != "cpu":
            self._h2d(component, feeds.values())
            outs = dict(zip(self._outputs[component], sess.run(self._outputs[component], feeds)))
            self._d2h(component, outs.values())
            return outs
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
