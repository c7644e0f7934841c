"""`bench` on the embedded default's engines (per stage, JSON, plot) and `--compare reference` on its checkpoint."""
import json

import pytest

from edge.cli import main


def test_bench_engines_json_and_plot(sim_engines, tmp_path, capsys):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    rc = main(["bench", "--engines", str(sim_engines), "--iterations", "12", "--warmup", "2", "--report", str(out),
               "--plot", str(png), "--quiet"])
    assert rc == 0
    r = json.loads(out.read_text())
    for stage in ("control_step", "vision_encoder", "prefill", "denoise", "denoise_step"):
        assert {"p50", "p90", "p99", "mean"} <= set(r["stages"][stage])
        assert 0 < r["stages"][stage]["p50"] <= r["stages"][stage]["p99"]
    assert r["stages"]["control_step"]["n"] == 12 and r["stages"]["denoise_step"]["n"] == 12 * 10
    # the whole step is at least its parts
    parts = sum(r["stages"][s]["p50"] for s in ("vision_encoder", "prefill", "denoise"))
    assert r["stages"]["control_step"]["p50"] >= 0.9 * parts
    sysf = r["system"]
    assert sysf["cpu_count"] >= 1 and "onnxruntime" in sysf and "jetson" in sysf and "temperatures_c" in sysf
    assert r["memory_mb"]["process_peak"] > 0 and r["jitter_ms"]["std"] is not None
    m = r["memory_mb"]  # real figures (from /proc on Linux), never NaN
    assert all(v == v and v > 0 for v in m.values()) and m["rss_peak_during_steps"] <= m["process_peak"] + 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # onnxruntime on the CPU: host memory is the device, nothing crosses
    t = r["transfer_bytes_per_step"]
    assert t["where"] == "host" and t["h2d"] == {} and t["d2h"] == {} and t["kv_moved"] == 0
    assert t["control_steps"] == 12 and not t["varies"]
    printed = capsys.readouterr().out
    assert "control_step" in printed
    assert "host<->device per control step: 0 B (host memory is the device" in printed


def test_bench_compare_reference(sim_engines, tmp_path, capsys):
    checkpoint = sim_engines.parent / "checkpoint"
    out = tmp_path / "cmp.json"
    rc = main(["bench", "--checkpoint", str(checkpoint), "--engines", str(sim_engines), "--compare", "reference",
               "--iterations", "4", "--warmup", "1", "--report", str(out), "--quiet"])
    assert rc == 0
    c = json.loads(out.read_text())["compare"]
    assert c["reference"]["p50"] > 0 and c["ours"]["p50"] > 0
    assert c["ratio_p50"] == pytest.approx(c["reference"]["p50"] / c["ours"]["p50"], rel=1e-2)
    # one p50 per quantity: ours in the comparison IS the stage table's control step (one measurement)
    r = json.loads(out.read_text())
    assert c["ours"]["p50"] == r["stages"]["control_step"]["p50"] and r["stages"]["control_step"]["n"] == 4
    assert r["stages"]["denoise_step"]["n"] == 4 * 10
    assert "re-encoded every step" in c["reference"]["how"] and "prompt cache" in c["ours"]["how"]
    assert "text" in c["reference"]["stages_p50"]
    # the same weights, observations and noise: the official padded path and ours agree
    assert c["actions_max_abs_diff"] < 1e-3
    printed = capsys.readouterr().out
    assert "speed-up (reference p50 / ours p50)" in printed
    assert f"the control_step above (p50 {c['ours']['p50']:.2f} ms" in printed and "nan" not in printed


def test_bench_argument_errors(capsys):
    assert main(["bench", "--compare", "reference", "--engines", "x"]) == 1
    assert "needs --checkpoint" in capsys.readouterr().err
    assert main(["bench"]) == 1


def test_bench_reports_host_device_bytes_of_a_device_backend(demo_checkpoint, tmp_path, capsys, monkeypatch):
    """The torch backend counted as on a GPU (`where = "device"`, tensors in CPU memory here): bench reports per
    control step what each stage uploads and downloads (the `transfer_bytes` of every infer) and 0 B of K/V."""
    import edge.bench as bench

    real = bench.load_bench_policy

    def as_device(args, engines):
        policy, backend = real(args, engines)
        policy.backend.where = "device"
        return policy, backend

    monkeypatch.setattr(bench, "load_bench_policy", as_device)
    out = tmp_path / "bench.json"
    assert main(["bench", "--checkpoint", str(demo_checkpoint), "--iterations", "3", "--warmup", "1",
                 "--report", str(out), "--quiet"]) == 0
    r = json.loads(out.read_text())
    t = r["transfer_bytes_per_step"]
    horizon, dim = r["spec"]["horizon"], r["spec"]["action_dim"]
    assert t["where"] == "device" and t["control_steps"] == 3 and not t["varies"]
    assert t["h2d"]["vision_encoder"] == 3 * 224 * 448 * 4  # the canvas' pixels, float32
    assert 0 < t["h2d"]["prefill"] < 1e6  # text, state and rope tables; the image tokens stay on the device
    assert t["h2d"]["denoise"] == t["d2h"]["denoise"] == horizon * dim * 4  # the noise up, the actions down
    assert set(t["d2h"]) == {"denoise"} and t["kv_moved"] == 0
    assert r["torch"] == {"device": "cpu", "compile": False}
    line = next(x for x in capsys.readouterr().out.splitlines() if "host<->device" in x)
    assert line.strip() == (f"host<->device per control step: vision_encoder {bench.human_bytes(3 * 224 * 448 * 4)} up, "
                            f"prefill {bench.human_bytes(t['h2d']['prefill'])} up, denoise {horizon * dim * 4} B up / "
                            f"{horizon * dim * 4} B down; K/V 0 B")


def test_transfer_summary_counts_the_kv_of_the_host_loop(demo_checkpoint):
    """The previous contract (every component through host arrays) on a device backend: the K/V come down after the
    prefill and go up at every denoise step; bench's K/V figure is exactly (steps + 1) x their size."""
    import numpy as np

    from edge.backends.host_loop import RunOnly
    from edge.bench import format_transfers, human_bytes, transfer_summary
    from quantize.variants import load_policy

    policy = load_policy(demo_checkpoint).policy
    backend = policy.backend
    backend.where = "device"
    policy.backend = RunOnly(backend)
    obs = {"images": [np.full((224, 224, 3), 90, np.uint8)] * 2, "state": np.zeros(8), "instruction": "pick up the red block"}
    policy.infer(obs, seed=0)
    moved = backend.traffic.take()
    spec = policy.spec
    t = transfer_summary([moved], "device", spec.horizon * spec.action_dim * 4, spec.steps)
    kv = moved["d2h"]["prefill"]
    assert kv > 0 and t["kv_moved"] == (spec.steps + 1) * kv
    assert f"K/V {human_bytes((spec.steps + 1) * kv)}" in format_transfers(t)


def test_memory_figures_without_psutil(monkeypatch):
    """Linux: RSS and peak from /proc/self/status even where psutil is not installed (the Jetson runtime)."""
    import builtins
    import sys

    import edge.process_memory as bench

    real_import = builtins.__import__

    def no_psutil(name, *a, **k):
        if name == "psutil":
            raise ImportError("no psutil")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_psutil)
    rss, peak = bench.rss_mb(), bench.peak_rss_mb()
    assert rss == rss and peak == peak and 0 < rss <= peak + 1
    if sys.platform.startswith("linux"):
        assert abs(peak - bench._proc_status_mb("VmHWM")) < 1
    monkeypatch.setattr(bench, "_proc_status_mb", lambda field: None)  # no /proc: psutil missing -> the peak, not NaN
    assert bench.rss_mb() > 0 and bench.peak_rss_mb() > 0
