"""Contract test of OUR TensorRT binding logic (edge/backends/tensorrt.py and trt_*.py) against RECORDING FAKES of
TensorRT and cuda-python (tests/edge/tensorrt_fakes.py): neither library can run here (no GPU, no TensorRT), so
this shows what the backend asks them to do (buffers bound per tensor name, bytes copied, what the CUDA graph
holds, the Euler math), not that the real libraries behave like the fakes. `imagewam-edge verify` on a device is
the check against the ONNX reference."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from tensorrt_fakes import NP, FakeCudaWorld, fake_tensorrt

from edge.backends import trt_compat
from edge.backends.base import Prefix
from edge.backends.tensorrt import TensorRTBackend
from edge.backends.trt_cuda import Cuda
from edge.errors import ConfigError, MissingDependencyError
from edge.manifest import sha256_file
from edge.sampler import euler_sample, flow_sigmas

# a tiny model: canvas 32x64 -> 8 image tokens of 4 channels; text 1..6 tokens of 5; state 3; K/V [2, 1, S, 6] with
# S = T + 1 + 8 in 10..15; actions [1, 4, 3]
N_IMG, C, DT, P, L, HD, A, DA = 8, 4, 5, 3, 2, 6, 4, 3
S_MIN, S_MAX = 1 + 1 + N_IMG, 6 + 1 + N_IMG
RNG = np.random.default_rng(0)
W_TEXT, W_STATE, W_IMG = (RNG.standard_normal((d, HD)).astype(np.float32) for d in (DT, P, C))


def vision(ins):
    p = ins["pixels"][0].reshape(3, 2, 16, 4, 16).mean(axis=(2, 4))  # [3, 2, 4] blocks of 16x16
    tokens = np.stack([p.mean(0), p.max(0), p.min(0), p.sum(0)], -1)  # [2, 4, C]
    return {"image_tokens": tokens.reshape(1, N_IMG, C).astype(np.float32)}


def prefill(ins):
    ctx = np.concatenate([ins["text"][0] @ W_TEXT, ins["state"] @ W_STATE, ins["image_tokens"][0] @ W_IMG])  # [S, HD]
    ctx = ctx * ins["rope_cos"][:, :1] + ins["rope_sin"][:, :1]
    keys = np.stack([ctx * (layer + 1) for layer in range(L)])[:, None]  # [L, 1, S, HD]
    return {"keys": keys.astype(np.float32), "values": (0.5 * keys).astype(np.float32)}


def make_denoise(vtype="FLOAT"):
    def denoise(ins):
        x, sigma = ins["x"], ins["sigma"][0]
        kv = ins["keys"].astype(np.float32).mean(axis=(0, 1, 2))[:DA] + 0.01 * ins["values"].astype(np.float32).mean()
        v = (-x * sigma + np.float32(0.05) * kv).astype(np.float32)  # [1, A, DA]
        return {"velocity": v.astype(NP[vtype])}
    return denoise


def models(vtype="FLOAT"):
    return {"vision_encoder": {"compute": vision, "out_shapes": {"image_tokens": lambda s: (1, N_IMG, C)}},
            "prefill": {"compute": prefill, "out_shapes": {n: (lambda s: (L, 1, s["rope_cos"][0], HD))
                                                          for n in ("keys", "values")}},
            "denoise_step": {"compute": make_denoise(vtype), "out_shapes": {"velocity": lambda s: (1, A, DA)}}}


def tensor(name, mode, shape, lo=None, hi=None, dtype="FLOAT"):
    lo, hi = lo or shape, hi or shape
    return {"name": name, "mode": mode, "dtype": dtype, "shape": [d if a == b else -1 for d, a, b in zip(shape, lo, hi)],
            "range": [list(lo), list(hi)]}


def engine_specs(vtype="FLOAT"):
    kv = [(L, 1, S_MIN, HD), (L, 1, S_MAX, HD)]
    return {
        "vision_encoder": [tensor("pixels", "in", (1, 3, 32, 64)), tensor("image_tokens", "out", (1, N_IMG, C))],
        "prefill": [tensor("text", "in", (1, 3, DT), (1, 1, DT), (1, 6, DT)), tensor("state", "in", (1, P)),
                    tensor("image_tokens", "in", (1, N_IMG, C)),
                    tensor("rope_cos", "in", (S_MIN, 4), (S_MIN, 4), (S_MAX, 4)),
                    tensor("rope_sin", "in", (S_MIN, 4), (S_MIN, 4), (S_MAX, 4)),
                    tensor("keys", "out", kv[0], *kv), tensor("values", "out", kv[0], *kv)],
        "denoise_step": [tensor("x", "in", (1, A, DA)), tensor("sigma", "in", (1,)),
                         tensor("keys", "in", kv[0], *kv), tensor("values", "in", kv[0], *kv),
                         tensor("velocity", "out", (1, A, DA), dtype=vtype)],
    }


PAD = {"vision_encoder": 1000, "prefill": 5000, "denoise_step": 3000}  # file sizes: prefill largest


def write_engines(path, version="10.3.0", vtype="FLOAT"):
    path.mkdir()
    for comp, tensors in engine_specs(vtype).items():
        (path / f"{comp}.engine").write_text(json.dumps({"component": comp, "tensors": tensors, "pad": "x" * PAD[comp]}))
        profile = {t["name"]: [t["range"][0], t["range"][0], t["range"][1]] for t in tensors if t["mode"] == "in"}
        (path / f"{comp}.json").write_text(json.dumps({"component": comp, "profile": profile}))
    files = {f"{c}.engine": sha256_file(path / f"{c}.engine") for c in PAD}
    (path / "manifest.json").write_text(json.dumps({"kind": "tensorrt", "tensorrt": version,
                                                    "compute_capability": [8, 7], "files": files}))
    return path


COMPONENTS = ["vision_encoder", "prefill", "denoise_step"]


def make_backend(tmp_path, version="10.3.0", vtype="FLOAT", strongly_typed_flag=True):
    world = FakeCudaWorld()
    trt = fake_tensorrt(version, world, models(vtype), strongly_typed_flag=strongly_typed_flag)
    engines = write_engines(tmp_path / f"trt-{version}-{vtype}", version, vtype)
    cuda = Cuda(world.runtime, world.driver, world.nvrtc)
    return TensorRTBackend(engines, COMPONENTS, trt=trt, cuda=cuda), world, trt


def observation(text_len=3, seed=1):
    rng = np.random.default_rng(seed)
    s = text_len + 1 + N_IMG
    return {"pixels": rng.uniform(-1, 1, (1, 3, 32, 64)).astype(np.float32),
            "text": rng.standard_normal((1, text_len, DT)).astype(np.float32),
            "state": rng.standard_normal((1, P)).astype(np.float32),
            "rope_cos": np.cos(np.arange(s * 4, dtype=np.float32).reshape(s, 4)),
            "rope_sin": np.sin(np.arange(s * 4, dtype=np.float32).reshape(s, 4))}


def control_step(backend, obs, noise, sigmas):
    """The calls edge/policy.py + edge/prefix_stages.py make per control step."""
    tokens = backend.vision({"pixels": obs["pixels"]})["image_tokens"]
    prefix = backend.prefill({"text": obs["text"], "state": obs["state"], "image_tokens": tokens,
                              "rope_cos": obs["rope_cos"], "rope_sin": obs["rope_sin"]})
    return backend.denoise(prefix, noise, sigmas), prefix


def reference(obs, noise, sigmas, vtype="FLOAT"):
    tokens = vision({"pixels": obs["pixels"]})["image_tokens"]
    kv = prefill({**obs, "image_tokens": tokens})
    step = make_denoise(vtype)
    return euler_sample(noise, lambda x, s, i: step({"x": x, "sigma": np.array([s], np.float32), **kv})["velocity"],
                        sigmas)


def bindings(trt, component):
    ctx = next(c for c in trt.contexts if c.component == component)
    return dict(ctx.bind_log)


def test_prefill_outputs_are_the_denoise_inputs_by_address(tmp_path):
    backend, world, trt = make_backend(tmp_path)
    vis, pre, den = (bindings(trt, c) for c in COMPONENTS)
    assert pre["keys"] == den["keys"] and pre["values"] == den["values"]  # the same device buffers
    assert vis["image_tokens"] == pre["image_tokens"]
    assert len({*vis.values(), *pre.values(), *den.values()}) == 11  # one buffer per distinct tensor name
    for ctx in trt.contexts:  # each address bound once, at load: the control step never re-binds
        assert len(ctx.bind_log) == len(dict(ctx.bind_log))
    # allocated once, at the largest profile shape: K/V at S_MAX
    mallocs = {c.args[1]: c.args[0] for c in world.named("cudaMalloc")}
    assert mallocs[den["keys"]] == L * 1 * S_MAX * HD * 4
    backend.close()


def test_a_control_step_moves_no_kv_bytes(tmp_path):
    backend, world, trt = make_backend(tmp_path)
    sigmas, noise, obs = flow_sigmas(10), np.random.default_rng(5).standard_normal((1, A, DA)).astype(np.float32), observation()
    control_step(backend, obs, noise, sigmas)  # the first step also captures the graph
    backend.traffic.take()
    world.calls.clear()
    (x0, step_ms), prefix = control_step(backend, obs, noise, sigmas)
    traffic = backend.traffic.take()
    host_in = {k: obs[k].nbytes for k in ("text", "state", "rope_cos", "rope_sin")}
    assert traffic["h2d"] == {"vision_encoder": obs["pixels"].nbytes, "prefill": sum(host_in.values()),
                              "denoise": noise.nbytes}
    assert traffic["d2h"] == {"denoise": noise.nbytes}  # only the action chunk comes back
    assert prefix.where == "device" and all(t.ptr == bindings(trt, "denoise_step")[n] for n, t in prefix.tensors.items())
    copies = world.named("cudaMemcpyAsync")
    kv_bytes = L * (3 + 1 + N_IMG) * HD * 4
    assert all(c.args[3] not in (kv_bytes, N_IMG * C * 4) for c in copies)  # no K/V, no image tokens copied
    assert sorted(c.args[0] for c in copies if c.args[0] != "D2D") == ["D2H"] + ["H2D"] * 6  # pixels, text, state, rope x2, noise
    assert not [c for c in copies if c.args[0] == "D2D"]  # the per-step sigma copies live in the graph (replayed)
    assert step_ms == [] and x0.shape == (1, A, DA)
    backend.close()


@pytest.mark.parametrize("vtype", ["FLOAT", "BF16"])
def test_device_euler_equals_the_sampler(tmp_path, vtype):
    if vtype not in NP:
        pytest.skip("ml_dtypes is not installed")
    backend, world, trt = make_backend(tmp_path, vtype=vtype)
    sigmas = flow_sigmas(10)
    for seed in (1, 2):
        obs, noise = observation(seed=seed), np.random.default_rng(seed).standard_normal((1, A, DA)).astype(np.float32)
        (x0, _), _ = control_step(backend, obs, noise, sigmas)
        np.testing.assert_array_equal(x0, reference(obs, noise, sigmas, vtype))
    assert "--fmad=false" in str(world.named("nvrtcCompileProgram")[0].args)
    denoise_ctx = next(c for c in trt.contexts if c.component == "denoise_step")
    # per step, the engine saw that step's fp32 sigma (a device constant in the graph), warm-up excluded
    assert denoise_ctx.seen_sigma[-10:] == [float(np.float32(s)) for s in sigmas[:-1]]
    backend.close()


def test_graph_captured_once_per_prefix_shape(tmp_path):
    backend, world, trt = make_backend(tmp_path)
    sigmas, noise = flow_sigmas(10), np.zeros((1, A, DA), np.float32)
    for seed in (1, 2, 3):  # same instruction length: one capture, three launches
        control_step(backend, observation(text_len=3, seed=seed), noise, sigmas)
    assert backend.loop.captures == 1 and len(world.named("cudaStreamBeginCapture")) == 1
    assert len(world.named("cudaGraphLaunch")) == 3
    assert world.named("cudaGraphInstantiate")[0].args == (30,)  # 10 x (sigma copy, engine, Euler kernel)
    names = [c.name for c in world.calls]
    begin, end = names.index("cudaStreamBeginCapture"), names.index("cudaStreamEndCapture")
    captured = world.calls[begin + 1: end]
    assert [c.name for c in captured] == ["cudaMemcpyAsync", "execute_async_v3", "cuLaunchKernel"] * 10
    assert {(c.args[0], c.args[3]) for c in captured if c.name == "cudaMemcpyAsync"} == {("D2D", 4)}
    assert names[begin - 1] == "execute_async_v3"  # the warm-up enqueue right before the capture
    dts = [c.args[3] for c in captured if c.name == "cuLaunchKernel"]
    assert dts == [float(np.float32(b - a)) for a, b in zip(sigmas[:-1], sigmas[1:])]
    (x0, _), _ = control_step(backend, observation(text_len=5), noise, sigmas)  # a new instruction: new prefix length
    assert backend.loop.captures == 2 and len(world.named("cudaGraphExecDestroy")) == 1
    np.testing.assert_array_equal(x0, reference(observation(text_len=5), noise, sigmas))
    backend.close()


def test_a_failed_capture_leaves_the_stream_usable(tmp_path):
    backend, world, trt = make_backend(tmp_path)
    ctx = next(c for c in trt.contexts if c.component == "denoise_step")
    real = ctx.execute_async_v3
    ctx.execute_async_v3 = lambda stream: bool(int(stream) not in world.capturing) and real(stream)
    obs, noise, sigmas = observation(), np.zeros((1, A, DA), np.float32), flow_sigmas(4)
    with pytest.raises(ConfigError, match="execute_async_v3 failed for denoise_step"):
        control_step(backend, obs, noise, sigmas)
    assert not world.capturing and backend.loop.graph is None  # capture ended, nothing half-built kept
    assert len(world.named("cudaGraphDestroy")) == 1
    ctx.execute_async_v3 = real
    (x0, _), _ = control_step(backend, obs, noise, sigmas)  # and the next step captures and runs
    np.testing.assert_array_equal(x0, reference(obs, noise, sigmas))
    backend.close()


def test_stale_prefix_and_outside_profile_are_refused(tmp_path):
    backend, _, _ = make_backend(tmp_path)
    sigmas, noise = flow_sigmas(4), np.zeros((1, A, DA), np.float32)
    _, old = control_step(backend, observation(seed=1), noise, sigmas)
    control_step(backend, observation(seed=2), noise, sigmas)
    with pytest.raises(ConfigError, match="overwritten"):
        backend.denoise(old, noise, sigmas)
    with pytest.raises(ConfigError, match="profile"):
        backend.run("prefill", {**observation(text_len=7), "image_tokens": np.zeros((1, N_IMG, C), np.float32)})
    with pytest.raises(ConfigError, match="prefix has no"):
        backend.denoise(Prefix({}, 0), noise, sigmas)
    backend.close()


def test_device_tensors_read_on_the_host_are_counted(tmp_path):
    backend, _, _ = make_backend(tmp_path)
    obs = observation()
    tokens = backend.vision({"pixels": obs["pixels"]})["image_tokens"]
    assert tokens.shape == (1, N_IMG, C) and backend.traffic.take()["d2h"] == {}  # stays on the device
    np.testing.assert_array_equal(np.asarray(tokens), vision(obs)["image_tokens"])
    assert backend.traffic.take()["d2h"] == {"vision_encoder": N_IMG * C * 4}
    host = backend.run("vision_encoder", {"pixels": obs["pixels"]})  # run: host arrays, for export and the gate
    assert isinstance(host["image_tokens"], np.ndarray) and backend.traffic.take()["d2h"] == {"vision_encoder": 128}
    keys = backend.run("prefill", {**obs, "image_tokens": host["image_tokens"]})["keys"]
    assert isinstance(keys, np.ndarray) and keys.shape == (L, 1, 3 + 1 + N_IMG, HD)
    # component-level use (verify, PTQ capture): host K/V in, host velocity out
    kv = prefill({**obs, "image_tokens": vision(obs)["image_tokens"]})
    out = backend.run("denoise_step", {"x": np.ones((1, A, DA), np.float32), "sigma": np.array([0.5], np.float32), **kv})
    np.testing.assert_array_equal(out["velocity"], make_denoise()({"x": np.ones((1, A, DA), np.float32),
                                                                   "sigma": np.array([0.5], np.float32), **kv})["velocity"])
    backend.close()


def test_engines_load_largest_first_with_the_mapping_released(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="edge.backends.trt_engine"):
        backend, world, trt = make_backend(tmp_path)
    assert [d["nbytes"] > 0 for d in trt.deserialized] == [True] * 3
    sizes = [d["nbytes"] for d in trt.deserialized]
    assert sizes == sorted(sizes, reverse=True)  # prefill, denoise_step, vision_encoder
    assert all(d["blob"].closed for d in trt.deserialized)  # the file mapping is gone after each deserialize
    assert sum("peak" in r.getMessage() for r in caplog.records) == 3
    backend.close()
    assert not world.mem.blocks and not world.host  # every device and pinned buffer freed


def test_tensorrt_10_and_11_paths(tmp_path):
    # the runtime: TensorRT 11 (no STRONGLY_TYPED enum member, no precision BuilderFlags) through the same code
    backend, _, trt = make_backend(tmp_path, version="11.4.0", strongly_typed_flag=False)
    obs, noise, sigmas = observation(), np.zeros((1, A, DA), np.float32), flow_sigmas(10)
    (x0, _), _ = control_step(backend, obs, noise, sigmas)
    np.testing.assert_array_equal(x0, reference(obs, noise, sigmas))
    backend.close()
    # the builder flags
    world = FakeCudaWorld()
    assert trt_compat.strongly_typed_flags(fake_tensorrt("10.3.0", world, {})) == 1 << 1
    assert trt_compat.strongly_typed_flags(fake_tensorrt("11.4.0", world, {})) == 1 << 1  # kept, ignored by 11
    assert trt_compat.strongly_typed_flags(fake_tensorrt("11.4.0", world, {}, strongly_typed_flag=False)) == 0
    with pytest.raises(ConfigError, match="STRONGLY_TYPED"):
        trt_compat.strongly_typed_flags(fake_tensorrt("10.3.0", world, {}, strongly_typed_flag=False))


def test_versions_and_missing_libraries_are_refused(tmp_path, monkeypatch):
    import sys
    import types

    with pytest.raises(ConfigError, match="TensorRT 9.0 is not supported"):
        monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="9.0"))
        trt_compat.load_tensorrt()
    stubs_only = types.ModuleType("tensorrt")
    stubs_only.__path__ = ["site-packages/tensorrt"]  # what `tensorrt-stubs` alone imports as
    monkeypatch.setitem(sys.modules, "tensorrt", stubs_only)
    with pytest.raises(MissingDependencyError, match="type stubs"):
        trt_compat.load_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # not installed
    with pytest.raises(MissingDependencyError, match="--backend onnxruntime"):
        TensorRTBackend(write_engines(tmp_path / "e"), COMPONENTS)
    with pytest.raises(ConfigError, match="TensorRT 10.3.0; this device has TensorRT 11.4.0"):
        world = FakeCudaWorld()
        TensorRTBackend(write_engines(tmp_path / "f"), COMPONENTS, trt=fake_tensorrt("11.4.0", world, models()),
                        cuda=Cuda(world.runtime, world.driver, world.nvrtc))


def test_cuda_python_without_a_gpu_says_what_to_do(monkeypatch):
    import sys
    import types

    from edge.backends.trt_cuda import CudaError, load_cuda

    world = FakeCudaWorld()
    world.runtime.cudaSetDevice = lambda device: (100,)  # cudaErrorNoDevice, as on a CPU machine with cuda-python
    bindings = types.SimpleNamespace(runtime=world.runtime, driver=world.driver, nvrtc=world.nvrtc)
    monkeypatch.setitem(sys.modules, "cuda", types.SimpleNamespace(bindings=bindings))
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    with pytest.raises(CudaError, match="no usable CUDA device.*--backend onnxruntime"):
        load_cuda()
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    monkeypatch.setitem(sys.modules, "cuda", None)
    with pytest.raises(MissingDependencyError, match="cuda-python"):
        load_cuda()
