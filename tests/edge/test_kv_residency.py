"""The K/V cache stays where the backend keeps it: the prefill's outputs are the denoise inputs, with no copy, and a
control step moves no K/V bytes between host and accelerator after the prefill (backend contract, edge/backends)."""
import numpy as np
import pytest

OBS = {"images": [np.full((224, 224, 3), 90, np.uint8)] * 2, "state": np.zeros(8), "instruction": "pick up the red block"}


class BindingSpy:
    """Passes every call to onnxruntime's real IOBinding and records the host pointers bound per input name."""

    def __init__(self, binding, log):
        self._b, self._log = binding, log

    def bind_cpu_input(self, name, array):
        self._log.append((name, array.ctypes.data))
        return self._b.bind_cpu_input(name, array)

    def __getattr__(self, item):
        return getattr(self._b, item)


class SessionSpy:
    def __init__(self, sess, log):
        self._s, self._log = sess, log

    def io_binding(self):
        return BindingSpy(self._s.io_binding(), self._log)

    def run_with_iobinding(self, binding, *args):
        return self._s.run_with_iobinding(binding._b if isinstance(binding, BindingSpy) else binding, *args)

    def __getattr__(self, item):
        return getattr(self._s, item)


def test_onnxruntime_cpu_binds_the_prefill_buffers_once_per_step_without_copies(demo_engines):
    from edge.engines import load_engine_policy

    policy = load_engine_policy(demo_engines)
    backend = policy.backend
    seen_prefix = []
    prefill = backend.prefill

    def keep(inputs):
        prefix = prefill(inputs)
        seen_prefix.append(prefix)
        return prefix

    backend.prefill = keep
    bound: list = []
    backend.sessions["denoise_step"] = SessionSpy(backend.sessions["denoise_step"], bound)
    for seed in range(2):
        out = policy.infer(OBS, seed=seed)
        assert np.isfinite(out["actions"]).all()
        assert out["transfer_bytes"] == {"h2d": {}, "d2h": {}}  # the CPU provider: host memory is the device
    for name in ("keys", "values"):
        ptrs = [p for n, p in bound if n == name]
        assert len(ptrs) == 2, "K/V bound once per control step, not once per denoise step"
        for ptr, prefix in zip(ptrs, seen_prefix):
            assert ptr == prefix.tensors[name].ctypes.data  # the prefill's own output buffer, not a copy
        assert ptrs[0] == ptrs[1]  # the prefill writes into buffers allocated once per shape
    assert len([n for n, _ in bound if n == "x"]) == 2 * policy.spec.steps


def test_onnxruntime_control_step_equals_the_reference_sampler(demo_engines):
    """The backend's own loop (K/V bound once, FP32 Euler) gives the actions of edge.sampler over run() calls."""
    from edge.backends.host_loop import RunOnly
    from edge.engines import load_engine_policy

    policy = load_engine_policy(demo_engines)
    a = policy.infer(OBS, seed=4)["actions_normalized"]
    policy.backend = RunOnly(policy.backend)
    b = policy.infer(OBS, seed=4)["actions_normalized"]
    np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def torch_policy(demo_checkpoint):
    pytest.importorskip("torch")
    from quantize.torch_backend import load_torch_policy

    return load_torch_policy(demo_checkpoint).policy


def test_torch_denoise_reads_the_prefill_tensors_themselves(torch_policy):
    backend = torch_policy.backend
    model = backend.model
    real = model.velocity
    seen = []

    def velocity(x, sigma, keys, values, *rest):
        seen.append((keys.data_ptr(), values.data_ptr()))
        return real(x, sigma, keys, values, *rest)

    prefixes = []
    prefill = backend.prefill
    backend.prefill = lambda inputs: prefixes.append(prefill(inputs)) or prefixes[-1]
    model.velocity = velocity
    backend._velocity = velocity
    try:
        torch_policy.infer(OBS, seed=0)
    finally:
        model.velocity = real
        backend._velocity = real
        del backend.prefill
    k, v = prefixes[0].tensors["keys"], prefixes[0].tensors["values"]
    assert seen == [(k.data_ptr(), v.data_ptr())] * torch_policy.spec.steps


def test_transfer_counter_sees_no_kv_after_the_prefill(torch_policy):
    """The torch backend's accounting as on a GPU (`where = "device"`; the tensors stay in CPU memory here): the
    whole control step uploads pixels, text, state, rope tables and the noise, downloads the actions, and moves
    none of the K/V; the previous contract (every component through host arrays) moves the K/V at every step."""
    from edge.backends.host_loop import RunOnly

    backend = torch_policy.backend
    backend.where = "device"
    try:
        out = torch_policy.infer(OBS, seed=0)
        kv = out["transfer_bytes"]
        torch_policy.backend = RunOnly(backend)
        old = torch_policy.infer(OBS, seed=0)
        moved = backend.traffic.take()  # RunOnly keeps its own counter; the torch backend counted the copies
    finally:
        torch_policy.backend = backend
        backend.where = "host"
    horizon, dim = torch_policy.spec.horizon, torch_policy.spec.action_dim
    assert kv["h2d"]["denoise"] == horizon * dim * 4 and kv["d2h"] == {"denoise": horizon * dim * 4}
    assert set(kv["h2d"]) == {"vision_encoder", "prefill", "denoise"}
    pixels = 3 * 224 * 448 * 4
    assert kv["h2d"]["vision_encoder"] == pixels
    # the old path: the K/V come down after the prefill and go up again at every denoise step
    kv_up = moved["h2d"]["denoise_step"]
    assert kv_up > 100 * kv["h2d"]["denoise"] and moved["d2h"]["prefill"] * torch_policy.spec.steps <= kv_up + 1
    np.testing.assert_allclose(old["actions_normalized"], out["actions_normalized"], atol=1e-5)
