"""`bench` on the embedded default's engines (per stage, JSON, plot) and `--compare reference` on its checkpoint."""
import json

import pytest

from edge.cli import main


def test_bench_engines_json_and_plot(sim_engines, tmp_path, capsys):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    rc = main(["bench", "--engines", str(sim_engines), "--iterations", "12", "--warmup", "2", "--json", str(out),
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
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "control_step" in capsys.readouterr().out


def test_bench_compare_reference(sim_engines, tmp_path, capsys):
    checkpoint = sim_engines.parent / "checkpoint"
    out = tmp_path / "cmp.json"
    rc = main(["bench", "--checkpoint", str(checkpoint), "--engines", str(sim_engines), "--compare", "reference",
               "--iterations", "4", "--warmup", "1", "--json", str(out), "--quiet"])
    assert rc == 0
    c = json.loads(out.read_text())["compare"]
    assert c["reference"]["p50"] > 0 and c["ours"]["p50"] > 0
    assert c["ratio_p50"] == pytest.approx(c["reference"]["p50"] / c["ours"]["p50"], rel=1e-2)
    assert "re-encoded every step" in c["reference"]["how"] and "prompt cache" in c["ours"]["how"]
    assert "text" in c["reference"]["stages_p50"]
    # the same weights, observations and noise: the official padded path and ours agree
    assert c["actions_max_abs_diff"] < 1e-3
    printed = capsys.readouterr().out
    assert "speed-up (reference p50 / ours p50)" in printed


def test_bench_argument_errors(capsys):
    assert main(["bench", "--compare", "reference", "--engines", "x"]) == 1
    assert "needs --checkpoint" in capsys.readouterr().err
    assert main(["bench"]) == 1
