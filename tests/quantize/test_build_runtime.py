"""TensorRT build and runtime: everything decided before TensorRT runs (profiles, precision refusals, manifest
checks) is tested here; the TensorRT calls themselves need a GPU and are marked so."""
import json
import shutil

import pytest

from edge.errors import ConfigError, MissingDependencyError
from edge.manifest import check_tensorrt_manifest, profile_shapes, verify_files
from quantize.build import plan_build


def test_profiles_follow_the_export_metadata(demo_engines):
    meta = json.loads((demo_engines / "prefill.json").read_text())
    prof = profile_shapes(meta)
    lo, opt, hi = prof["text"]
    assert lo[1] == 1 and hi[1] == 128 and lo[0] == opt[0] == hi[0] == 1  # the demo encoder's max_length is 128
    n_img = 392
    assert prof["rope_cos"][0][0] == 2 + n_img and prof["rope_cos"][2][0] == 128 + 1 + n_img
    assert prof["rope_cos"][1][0] == opt[1] + 1 + n_img  # opt is the exported example, consistent across inputs
    assert prof["image_tokens"] == ((1, n_img, 128),) * 3
    den = profile_shapes(json.loads((demo_engines / "denoise_step.json").read_text()))
    assert den["keys"][2][2] == prof["rope_cos"][2][0]  # K/V length range = prefill's sequence range


def test_profile_without_ranges_is_refused(demo_engines):
    meta = json.loads((demo_engines / "prefill.json").read_text())
    meta["ranges"] = {}
    with pytest.raises(ConfigError, match="re-export"):
        profile_shapes(meta)


def test_build_refuses_fp8_on_orin_before_touching_tensorrt(demo_engines, tmp_path):
    fp8 = tmp_path / "fp8"
    shutil.copytree(demo_engines, fp8)
    manifest = json.loads((fp8 / "manifest.json").read_text())
    manifest["precision"] = "fp8"
    (fp8 / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="INT8"):
        plan_build(fp8, (8, 7))
    plan = plan_build(fp8, (8, 9))  # Ada: allowed
    assert set(plan["components"]) == {"vision_encoder", "prefill", "denoise_step"}


def test_build_refuses_corrupted_or_rejected_input(demo_engines, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(demo_engines, bad)
    with open(bad / "prefill.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ConfigError, match="checksum"):
        plan_build(bad, (8, 7))
    manifest = json.loads((demo_engines / "manifest.json").read_text())
    manifest["gate"] = "failed"
    rejected = tmp_path / "rejected"
    shutil.copytree(demo_engines, rejected)
    (rejected / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="accuracy gate"):
        plan_build(rejected, (8, 7))


def test_runtime_refuses_mismatched_engines():
    m = {"kind": "tensorrt", "tensorrt": "10.3.0", "compute_capability": [8, 7], "source": {"model.pt": "ab" * 32}}
    check_tensorrt_manifest(m, "10.3.0.30", (8, 7))
    with pytest.raises(ConfigError, match="TensorRT 10.3.0; this device has TensorRT 10.16"):
        check_tensorrt_manifest(m, "10.16.1", (8, 7))
    with pytest.raises(ConfigError, match="compute capability 8.7; this GPU is 11.0"):
        check_tensorrt_manifest(m, "10.3.1", (11, 0))
    with pytest.raises(ConfigError, match="another checkpoint"):
        check_tensorrt_manifest(m, "10.3.1", (8, 7), source_sha="cd" * 32)
    with pytest.raises(ConfigError, match="not TensorRT"):
        check_tensorrt_manifest({"kind": "onnx"}, "10.3", (8, 7))


def test_manifest_checksums(demo_engines):
    manifest = json.loads((demo_engines / "manifest.json").read_text())
    verify_files(demo_engines, manifest)
    with pytest.raises(ConfigError, match="does not list"):
        verify_files(demo_engines, manifest, ["prefill.engine"])


def test_build_without_tensorrt_says_where_it_runs(demo_engines, tmp_path, capsys):
    pytest.importorskip("torch")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    from quantize.build import build_engines

    with pytest.raises(MissingDependencyError, match="runs on the device"):
        build_engines(demo_engines, tmp_path / "trt", compute_capability=(8, 7))
    assert not (tmp_path / "trt").exists()


def _gpu_available() -> bool:
    """TensorRT importable and a GPU that cuda-python (the TensorRT backend's CUDA layer) can see."""
    try:
        import tensorrt  # noqa: F401
        from cuda.bindings import runtime as cudart

        err, count = cudart.cudaGetDeviceCount()
        return int(err) == 0 and count > 0
    except Exception:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_available(), reason="needs an NVIDIA GPU with TensorRT 10+ and cuda-python")
def test_tensorrt_build_and_verify_on_device(demo_engines, tmp_path):
    from quantize.build import build_engines
    from quantize.verify import verify_engines

    build_engines(demo_engines, tmp_path / "trt")
    report = verify_engines(tmp_path / "trt", onnx_dir=demo_engines, max_observations=4)
    assert report["passed"], report["checks"]


def test_build_fp16_help_says_it_is_refused(capsys):
    from edge.cli import main

    with pytest.raises(SystemExit):
        main(["build", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--fp16 REFUSED now: builds are strongly typed (TensorRT 11" in out and "--high-precision fp16" in out
