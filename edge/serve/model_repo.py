"""A Triton model repository for a stock Triton container (nvcr.io/nvidia/tritonserver:<yy.mm>-py3 on an x86 GPU
server, the Jetson/iGPU build on a Jetson): two Python-backend models whose `model.py` loads our policy from an
engines directory and hands each request to the same handler as `imagewam-edge serve`. The container needs this
package's `edge` code and its runtime dependencies (onnxruntime-gpu or TensorRT's Python bindings); the repository's
README.md gives the docker command.

Which deployment when:
- `imagewam-edge serve` (PyTriton): a workstation or a GPU server where pip is at home; one command, no container;
  our process runs the policy behind Triton (one more local hop per request than the Python backend).
- this model repository: a server that already runs Triton containers (fleet, Kubernetes, model control, metrics),
  or Jetson's Triton build; Triton's Python backend runs the policy in its stub process."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..atomic import write_text
from ..errors import ConfigError
from . import protocol

TRITON_TYPES = {np.uint8: "TYPE_UINT8", np.float64: "TYPE_FP64", np.float32: "TYPE_FP32", np.int64: "TYPE_INT64",
                np.bytes_: "TYPE_STRING"}

MODEL_PY = '''"""Triton Python backend: ImageWAM policy (written by `imagewam-edge serve --model-repository`)."""
import json
import sys

import triton_python_backend_utils as pb_utils

NAMES = {names!r}
KIND = {kind!r}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {{k: v["string_value"] for k, v in config.get("parameters", {{}}).items()}}
        for path in reversed((params.get("package_path") or "").split(":")):  # first listed, first searched
            if path:
                sys.path.insert(0, path)
        from edge.serve.model_repo import make_handler

        self.handler = make_handler(KIND, params, int(args.get("model_instance_device_id") or 0))

    def execute(self, requests):
        responses = []
        for request in requests:
            inputs = {{}}
            for name in NAMES:
                t = pb_utils.get_input_tensor_by_name(request, name)
                if t is not None:
                    inputs[name] = t.as_numpy()
            try:
                out = self.handler(inputs)
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(k, v) for k, v in out.items()]))
            except Exception as exc:  # the robot shows this line (`XxxError: message`)
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError("%s: %s" % (type(exc).__name__, exc))))
        return responses
'''


def _config(name: str, inputs, outputs, params: dict, instances: int) -> str:
    def tensor(spec, is_input: bool) -> str:
        n, dt, shape = spec[0], spec[1], spec[2]
        opt = "\n    optional: true" if is_input and len(spec) > 3 and spec[3] else ""
        return (f'  {{\n    name: "{n}"\n    data_type: {TRITON_TYPES[dt]}\n    dims: [ {", ".join(map(str, shape))} ]'
                f"{opt}\n  }}")

    p = "\n".join(f'parameters: {{ key: "{k}" value: {{ string_value: {json.dumps(str(v))} }} }}'
                  for k, v in params.items() if v is not None)
    sep = ",\n"
    ins, outs = sep.join(tensor(s, True) for s in inputs), sep.join(tensor(s, False) for s in outputs)
    return (f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n'
            f"input [\n{ins}\n]\noutput [\n{outs}\n]\n"
            f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n{p}\n")


def write_model_repository(cfg, out: str | Path, package_path: str | None = None) -> Path:
    """Write `imagewam` and `imagewam_spec` into `out` for the policy `cfg` (a ServeConfig) describes. Paths are
    written as given: inside a container, pass the paths the container sees (e.g. --engines /models/engines)."""
    from ..engines import read_spec
    from ..transforms import get_canvas, get_embodiment

    if cfg.backend == "torch":
        raise ConfigError("--model-repository serves engines (onnxruntime or tensorrt); the torch backend is for "
                          "`imagewam-edge serve --backend torch`")
    engines = Path(cfg.engines)
    spec = read_spec(engines)
    canvas = get_canvas(spec.canvas or get_embodiment(spec.embodiment).canvas)
    inputs = protocol.model_inputs(len(canvas.slots))
    params = {"engines": str(engines), "backend": cfg.backend, "prompt_cache": cfg.prompt_cache,
              "steps": cfg.steps, "threads": cfg.threads or None, "package_path": package_path}
    out = Path(out)
    for name, ins, outs, kind, count in ((protocol.MODEL, inputs, protocol.MODEL_OUTPUTS, "policy", cfg.instances),
                                         (protocol.SPEC_MODEL, protocol.SPEC_INPUTS, protocol.SPEC_OUTPUTS, "spec", 1)):
        (out / name / "1").mkdir(parents=True, exist_ok=True)
        write_text(out / name / "config.pbtxt", _config(name, ins, outs, params, count))
        write_text(out / name / "1" / "model.py", MODEL_PY.format(names=[s[0] for s in ins], kind=kind))
    write_text(out / "README.md", _readme(out, engines))
    return out


def make_handler(kind: str, params: dict, device_id: int = 0):
    """Called by the generated model.py inside Triton's Python backend."""
    from ..engines import load_engine_policy
    from .handler import PolicyHandler, SpecHandler

    policy = load_engine_policy(params["engines"], backend=params.get("backend", "onnxruntime"),
                                prompt_cache=params.get("prompt_cache") or None,
                                steps=int(params["steps"]) if params.get("steps") else None,
                                threads=int(params.get("threads") or 0))
    handler = PolicyHandler(policy, device_id)
    if kind == "spec":
        return SpecHandler(handler, {"backend": params.get("backend"), "engines": params["engines"],
                                     "deployment": "model-repository"})
    return handler


def _readme(out: Path, engines: Path) -> str:
    return f"""# ImageWAM policy: Triton model repository (Python backend)

Written by `imagewam-edge serve --model-repository {out}`. Two models: `imagewam` (one control step per request)
and `imagewam_spec` (policy.json, canvas, prompt-cache check). The engines are read from `{engines}` (the path as
the server sees it) and the `edge` package must be importable in the Triton container (pip install this package
with its runtime extra in a derived image, or mount its source and set the `package_path` parameter).

    docker run --rm --gpus all -p 8000:8000 -p 8001:8001 -p 8002:8002 \\
        -v $PWD/{out.name}:/models -v {engines}:{engines} nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\
        tritonserver --model-repository=/models

Robots: `policy: {{backend: remote, url: SERVER:8001, timeout_s: 2.0}}` in the run config.
"""
