"""scripts/gpu_control_step.py is run on a lent GPU machine once per task with a few minutes of device time: its
whole flow (building, every pipeline, the comparison, the JSON) runs here at a tiny size on the CPU so that the
device run does not die on a mistake a CPU can find."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_script_runs_every_pipeline_on_the_cpu(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_control_step.py"), "--tiny", "--device", "cpu",
                           "--iterations", "1", "--warmup", "1", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_control_step.json").read_text())
    assert set(result["pipelines"]) == {"official-eager", "host-kv", "resident-eager", "ours"}
    for name, p in result["pipelines"].items():
        assert "error" not in p, (name, p)
        assert {"vision_encoder", "prefill", "denoise"} <= set(p["stages_ms"])
    diffs = result["max_abs_diff_vs_resident_eager"]
    assert diffs["ours"] == 0.0 and diffs["host-kv"] == 0.0
    assert diffs["official-eager"] < 1e-4  # padded 512-token text vs the trimmed prompt cache: equal in float32


def test_roofline_of_a_measured_gpu():
    sys.path.insert(0, str(ROOT / "scripts"))
    from gpu_control_step import roofline

    r = roofline("flux2-4b", 800.0, 4000.0, 44)
    assert r["denoise_step"]["bound"] == "memory" and r["prefill"]["bound"] == "compute"
    slower = roofline("flux2-4b", 400.0, 2000.0, 44)
    assert slower["prefill"]["ms"] == pytest.approx(2 * r["prefill"]["ms"])
