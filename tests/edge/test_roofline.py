import subprocess
import sys

import pytest

from edge import roofline as rl
from edge.errors import ConfigError


def test_configs_read_without_torch_match_the_model_code():
    torch = pytest.importorskip("torch")  # noqa: F841
    from dataclasses import asdict

    from quantize.model.action_expert import ActionExpertConfig
    from quantize.model.flux2 import FLUX2_PRESETS

    cfgs = rl.read_configs()
    for name in ("flux2-4b", "flux2-9b"):
        assert {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in cfgs[name].items()} == asdict(FLUX2_PRESETS[name])
    assert cfgs["expert"] == asdict(ActionExpertConfig())


def params(variant, comp):
    return next(c for c in rl.step_costs(variant, "fp16") if c.name == comp).params


def test_parameter_counts_match_design_estimates():
    assert params("flux2-4b", "prefill") == pytest.approx(3.88e9, rel=0.02)  # DESIGN §2
    assert params("flux2-9b", "prefill") == pytest.approx(9.08e9, rel=0.02)
    assert params("flux2-4b", "denoise_step") == pytest.approx(0.64e9, rel=0.02)
    assert params("flux2-9b", "denoise_step") == pytest.approx(0.95e9, rel=0.02)
    assert params("ovis-u1", "prefill") == pytest.approx(1.1e9, rel=0.12)
    assert params("ovis-u1", "denoise_step") == pytest.approx(1.0e9, rel=0.1)


def test_roofline_on_agx_orin_matches_design_section_7():
    row = rl.model_only("flux2-4b", "orin-agx-64gb", "int8")["rows"][0]
    comps = row["components"]
    assert comps["denoise_step"]["bound"] == "memory" and comps["denoise_step"]["passes"] == 10
    assert comps["denoise_step"]["ms"] == pytest.approx(38, rel=0.1)  # DESIGN: denoise ~38 ms (INT8)
    assert comps["prefill"]["bound"] == "compute" and 25 < comps["prefill"]["ms"] < 45  # DESIGN: ~40
    assert 60 < row["roofline_ms"] <= 100  # DESIGN: whole step <= 100 ms, roofline ~90 est.
    assert not comps["text_encoder (cached)"]["on_control_path"]
    ovis = rl.model_only("ovis-u1", "orin-agx-64gb", "int8")["rows"][0]["components"]["denoise_step"]
    assert ovis["bound"] == "memory" and ovis["ms"] == pytest.approx(49, rel=0.1)  # DESIGN: ~49 ms


def test_precision_targets_and_orderings():
    fp16 = rl.model_only("flux2-4b", "orin-agx-64gb", "fp16")["rows"][0]["roofline_ms"]
    int8 = rl.model_only("flux2-4b", "orin-agx-64gb", "int8")["rows"][0]["roofline_ms"]
    nano = rl.model_only("flux2-4b", "orin-nano-8gb", "int8")["rows"][0]
    assert int8 < fp16 < 2.1 * int8 and nano["roofline_ms"] > int8
    assert not nano["fits_memory"]  # 4B + expert + text encoder do not fit 8 GB
    with pytest.raises(ConfigError, match="no FP8"):
        rl.model_only("flux2-4b", "orin-nx-16gb", "fp8")
    with pytest.raises(ConfigError, match="unknown value"):
        rl.model_only("flux2-12b", "thor", "int8")
    table = rl.model_only("all", "all", "all")
    combos = {(r["variant"], r["target"], r["precision"]) for r in table["rows"]}
    assert ("ovis-u1", "thor", "fp8") in combos and ("flux2-9b", "orin-agx-64gb", "fp8") not in combos
    assert len(combos) == 3 * (4 * 2 + 3)


def test_video_baseline_costs_more_and_brackets_the_seed_claim():
    row = rl.model_only("flux2-4b", "orin-agx-64gb", "int8")["rows"][0]
    grid = row["video_baseline"]
    assert all(0 < g["flops_saved"] < 1 for g in grid.values())
    assert grid["F4_K10"]["flops_saved"] > grid["F4_K1"]["flops_saved"] > grid["F1_K1"]["flops_saved"]
    saved = sorted(g["flops_saved"] for g in grid.values())
    assert saved[0] < rl.SEED_CLAIM_SAVED < saved[-1]
    assert abs(grid[row["closest_to_seed_claim"]]["flops_saved"] - rl.SEED_CLAIM_SAVED) < 0.03


def test_model_only_cli_imports_no_torch():
    code = ("import sys; from edge.cli import main; rc = main(['bench', '--model-only', '--variant', 'all', '--target', "
            "'all', '--precision', 'all']); print('TORCH', 'torch' in sys.modules); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "TORCH False" in r.stdout and "flux2-9b" in r.stdout and "ovis-u1" in r.stdout and "thor" in r.stdout
