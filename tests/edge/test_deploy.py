"""bundle -> flash (into a temporary root) -> doctor, without a Jetson."""
import json
import os
import shutil

import pytest
import yaml

from edge.cli import main
from edge.deploy.bundle import make_bundle, open_bundle
from edge.deploy.flash import FlashError, flash, remote_commands
from edge.errors import ConfigError


def _config(tmp_path, backend="onnxruntime", instruction="pick up the red block"):
    calib = tmp_path / "calib"
    (calib / "sim-0").mkdir(parents=True, exist_ok=True)
    (calib / "sim-0" / "intrinsics.yaml").write_text("width: 320\nheight: 240\nfx: 300\nfy: 300\ncx: 160\ncy: 120\n")
    cfg = {
        "name": "test-robot", "instruction": instruction,
        "policy": {"backend": backend, "engines": "/nowhere/engines"},
        "cameras": [{"kind": "sim", "slot": "agentview", "width": 320, "height": 240, "fps": 30, "serial": "sim-0",
                     "intrinsics": "sim-0/intrinsics.yaml"},
                    {"kind": "sim", "slot": "wrist", "width": 320, "height": 240, "fps": 30, "serial": "sim-1"}],
        "arms": [{"protocol": "dynamixel", "port": "/dev/imagewam-arm0", "ids": [1, 2, 3, 4, 5, 6, 7]}],
    }
    path = tmp_path / f"robot-{backend}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    prompts = tmp_path / "instructions.txt"
    prompts.write_text("# one per line\npick up the red block\n")
    return path, calib, prompts


@pytest.fixture
def bundle(demo_engines, tmp_path):
    cfg, calib, prompts = _config(tmp_path)
    out = tmp_path / "bundle"
    manifest = make_bundle(cfg, out, demo_engines, prompts, calibration=calib, serial_aliases={"imagewam-arm0": "FT123"})
    return out, manifest


def test_bundle_holds_everything_the_loop_needs(bundle):
    out, manifest = bundle
    assert manifest["model"]["precision"] == "fp32" and manifest["model"]["engines"] == "onnx"
    assert manifest["instructions"] == ["pick up the red block"]
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["policy"]["engines"] == "engines" and cfg["policy"]["prompt_cache"] == "prompts.npz"
    assert (out / cfg["cameras"][0]["intrinsics"]).is_file()
    from edge.config import from_yaml

    from_yaml(out / "config.yaml")  # paths resolve inside the bundle
    from edge.prompt_cache import PromptCache

    assert len(PromptCache(out / "prompts.npz")) == 1
    assert open_bundle(out, out.parent) == out  # every checksum verifies


def test_bundle_refuses_missing_instruction_and_fp8_on_orin(demo_engines, tmp_path):
    cfg, calib, prompts = _config(tmp_path, instruction="open the drawer")
    with pytest.raises(ConfigError, match="prompts add"):
        make_bundle(cfg, tmp_path / "b", demo_engines, prompts, calibration=calib)
    fp8 = tmp_path / "fp8"
    shutil.copytree(demo_engines, fp8)
    m = json.loads((fp8 / "manifest.json").read_text())
    m["precision"] = "fp8"
    (fp8 / "manifest.json").write_text(json.dumps(m))
    cfg, calib, prompts = _config(tmp_path)
    with pytest.raises(ConfigError, match="INT8"):
        make_bundle(cfg, tmp_path / "b", fp8, prompts, calibration=calib, target="orin")


def test_flash_dry_run_into_a_root_puts_files_units_and_rules_in_place(bundle, tmp_path):
    out, manifest = bundle
    root = tmp_path / "root"
    lines = []
    result = flash(out, root=root, dry_run=True, user="robot", say=lines.append)
    v = manifest["version"]
    current = root / "opt/imagewam/current"
    assert os.readlink(current) == f"releases/{v}" and (current / "config.yaml").is_file()
    unit = (root / "etc/systemd/system/imagewam-edge.service").read_text()
    assert "User=robot" in unit and "run --config /opt/imagewam/current/config.yaml" in unit and "KillSignal=SIGTERM" in unit and "LimitRTPRIO=99" in unit
    rules = (root / "etc/udev/rules.d/99-imagewam.rules").read_text()
    assert 'ATTRS{idVendor}=="8086"' in rules and 'ATTRS{serial}=="FT123", SYMLINK+="imagewam-arm0"' in rules
    text = "\n".join(lines)
    for cmd in ("udevadm control --reload-rules", "usermod -aG dialout", "systemctl enable imagewam-edge.service",
                "nvpmodel -m 0", "jetson_clocks"):
        assert cmd in text, cmd  # printed, not run
    again = flash(out, root=root, dry_run=True, say=lambda s: None)  # idempotent
    assert any("already installed" in s for s in again["steps"])
    assert result["version"] == again["version"] == v


def test_flash_refuses_a_corrupted_bundle(bundle, tmp_path):
    out, _ = bundle
    with open(out / "engines" / "prefill.onnx", "ab") as f:
        f.write(b"x")
    with pytest.raises(ConfigError, match="checksum"):
        flash(out, root=tmp_path / "root", dry_run=True, say=lambda s: None)


def test_interrupted_install_keeps_the_previous_one(demo_engines, tmp_path):
    cfg_a, calib, prompts = _config(tmp_path, backend="onnxruntime")
    a = make_bundle(cfg_a, tmp_path / "a.tar.gz", demo_engines, prompts, calibration=calib)
    root = tmp_path / "root"
    flash(tmp_path / "a.tar.gz", root=root, no_system=True, say=lambda s: None)
    current = root / "opt/imagewam/current"
    assert os.readlink(current) == f"releases/{a['version']}"
    # B holds ONNX for the tensorrt backend: flash must build engines on the device, which fails here (no TensorRT)
    cfg_b, calib, prompts = _config(tmp_path, backend="tensorrt")
    b = make_bundle(cfg_b, tmp_path / "b", demo_engines, prompts, calibration=calib)
    assert b["deploy"]["build_tensorrt"] and b["version"] != a["version"]
    with pytest.raises(FlashError, match=f"still releases/{a['version']}"):
        flash(tmp_path / "b", root=root, no_system=True, say=lambda s: None)
    assert os.readlink(current) == f"releases/{a['version']}"
    assert not any(p.name.startswith(".") for p in (root / "opt/imagewam/releases").iterdir())  # no partial left


def test_staging_root_never_runs_device_commands(bundle, tmp_path):
    out, _ = bundle
    with pytest.raises(ConfigError, match="--dry-run or --no-system"):
        flash(out, root=tmp_path / "root", say=lambda s: None)


def test_flash_over_ssh_is_rsync_then_remote_flash(bundle, capsys):
    out, _ = bundle
    cmds = remote_commands(out, "robot@jetson", ["--dry-run"])
    assert cmds[0][0] == "rsync" and cmds[0][-1] == f"robot@jetson:/tmp/{out.name}"
    assert cmds[1][:2] == ["ssh", "robot@jetson"] and cmds[1][-2:] == [f"/tmp/{out.name}", "--dry-run"]
    assert main(["flash", str(out), "--host", "robot@jetson", "--dry-run"]) == 0
    assert "$ rsync" in capsys.readouterr().out


def test_doctor_on_this_machine_reports_no_gpu_and_no_camera(capsys):
    code = main(["doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    checks = {c["name"]: c for c in report["checks"]}
    if report["compute_capability"] is None:
        assert checks["GPU"]["status"] == "fail" and checks["GPU"]["fix"]
        assert code == 1
    assert checks["cameras"]["status"] in ("warn", "fail", "ok")
    if checks["cameras"]["status"] == "warn":
        assert "no RealSense camera" in checks["cameras"]["detail"] or "not importable" in checks["cameras"]["detail"]
    assert report["summary"]["ok"] >= 1


def test_doctor_checks_cuda_python_not_pycuda(capsys, monkeypatch):
    """The TensorRT backend's CUDA calls go through cuda-python (`cuda.bindings`); pycuda is gone."""
    import sys
    import types

    main(["doctor", "--json"])
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert "pycuda" not in checks and "cuda-python" in checks
    if checks["cuda-python"]["status"] == "warn":
        assert "imagewam-edge[jetson]" in checks["cuda-python"]["fix"]
    from edge.deploy.doctor import check_cuda_python

    cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    bindings.__version__ = "13.3.1"
    cuda.bindings = bindings
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    check = check_cuda_python()
    assert check.status == "ok" and "13.3.1" in check.detail
