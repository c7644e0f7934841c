"""`verify --reference torch`: engines (here onnxruntime FP32 on the CPU; TensorRT on a device) against the checkpoint
on the torch backend, on the same observations and noise."""
import json

import pytest

from edge.cli import main


def verify(capsys, *args):
    rc = main(["verify", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_verify_onnx_engines_against_the_torch_checkpoint(demo_engines, demo_checkpoint, capsys):
    rc, out, err = verify(capsys, "--engines", demo_engines, "--reference", "torch", "--checkpoint", demo_checkpoint,
                          "--max-observations", 3, "--json")
    assert rc == 0, err
    r = json.loads(out)
    assert r["passed"] and r["held_out"] == 3
    assert r["reference"] == f"torch {demo_checkpoint} on cpu" and r["engines_backend"] == "onnxruntime"
    step = r["metrics"]["control_step"]
    # the FP32 export is the checkpoint: normalised and post-processed actions agree to ~1e-4
    assert step["actions"]["max_abs"] < 1e-4 and step["actions"]["max_abs_unnormalised"] < 1e-4
    robot = step["robot_actions"]
    assert len(robot["max_abs_per_dim"]) == 7 and max(robot["max_abs_per_dim"]) < 1e-4 and robot["flips"] == 0
    for comp in ("vision_encoder", "prefill", "denoise_step"):  # each component on the torch pipeline's own inputs
        assert all(m["cosine_min"] > 0.99999 for m in r["metrics"][comp].values())
    rc, out, _ = verify(capsys, "--engines", demo_engines, "--reference", "torch", "--checkpoint", demo_checkpoint,
                        "--max-observations", 1)
    assert rc == 0 and "limits: onnxruntime vs torch" in out and "PASSED" in out and "worst |error| per dimension" in out


def test_verify_fails_against_another_checkpoint(demo_engines, tmp_path, capsys):
    from quantize.demo import write_demo_checkpoint

    other = write_demo_checkpoint(tmp_path / "seed1", variant="flux2-tiny", embodiment="libero", seed=1)
    rc, out, err = verify(capsys, "--engines", demo_engines, "--reference", "torch", "--checkpoint", other,
                          "--max-observations", 2)
    assert rc == 3, err
    assert "FAILED" in out and "FAIL" in out.split("FAILED", 1)[1]


@pytest.mark.parametrize("args, message", [
    (["--reference", "torch"], "--reference torch needs --checkpoint DIR"),
    (["--checkpoint", "x"], "are for --reference torch"),
    (["--device", "cuda"], "are for --reference torch"),
    (["--reference", "torch", "--checkpoint", "x", "--reference-engines", "y"], "drop --reference-engines"),
    (["--reference", "torch", "--checkpoint", "x", "--onnx", "y"], "drop --reference-engines"),  # the old name
    (["--max-observations", "0"], "--max-observations must be >= 1"),
])
def test_verify_argument_errors(demo_engines, capsys, args, message):
    rc, _, err = verify(capsys, "--engines", demo_engines, *args)
    assert rc == 1 and message in err


def test_verify_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--reference torch --checkpoint release/ --device cuda" in out and "--max-observations 4" in out
