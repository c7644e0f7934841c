"""End to end through the real console-script entry point (edge.cli.main) on generated image directories."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from calib import synth
from calib.dataset import write_image, write_poses
from calib.geometry import T_from_list, inv_T, make_T, transform_delta

edge_cli = pytest.importorskip("edge.cli")
ROOT = Path(__file__).resolve().parents[2]
SPEC = "charuco:9,6,0.035,0.026,DICT_5X5_100"
LEAVES = ["board", "intrinsics", "handeye", "extrinsics", "verify", "capture"]


def _write_scene(d: Path, scene, camera, seed=0):
    d.mkdir(parents=True)
    names = []
    for i, T in enumerate(scene.T_cam_board):
        name = f"img_{i:02d}.png"
        write_image(d / name, synth.render_view(SPEC, T, camera, rng=np.random.default_rng(seed + i), rgb=True))
        names.append(name)
    write_poses(d / "poses.json", dict(zip(names, scene.T_base_gripper)))


@pytest.fixture(scope="module")
def eye_in_hand_dir(tmp_path_factory, camera):
    d = tmp_path_factory.mktemp("cli") / "views"
    scene = synth.handeye_scene(SPEC, 14, "eye-in-hand", camera, np.random.default_rng(21), pose_noise=(0.0002, 0.02))
    _write_scene(d, scene, camera)
    return d, scene


def test_intrinsics_then_handeye_end_to_end(eye_in_hand_dir, camera, tmp_path, capsys):
    d, scene = eye_in_hand_dir
    intr_file, he_file = tmp_path / "intr.yaml", tmp_path / "he.yaml"
    rc = edge_cli.main(["calibrate", "intrinsics", "--images", str(d), "--board", SPEC, "--serial", "123456789012",
                        "--out", str(intr_file)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "coverage" in out and "per-view RMS" in out
    intr = yaml.safe_load(intr_file.read_text())
    assert intr["serial"] == "123456789012" and (intr["width"], intr["height"]) == (640, 480)
    assert abs(intr["fx"] - camera.K[0, 0]) < 1.0 and abs(intr["cy"] - camera.K[1, 2]) < 1.0
    assert len(intr["dist"]) == 5 and intr["rms_px"] < 0.3 and intr["board"] == SPEC and intr["version"] == 1
    rc = edge_cli.main(["calibrate", "handeye", "--images", str(d), "--poses", str(d / "poses.json"),
                        "--intrinsics", str(intr_file), "--board", SPEC, "--mode", "eye-in-hand", "--out", str(he_file),
                        "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0 and summary["mode"] == "eye-in-hand"
    he = yaml.safe_load(he_file.read_text())
    T = T_from_list(he["T_gripper_camera"], "T_gripper_camera")
    deg, mm = transform_delta(T, scene.X)
    print(f"CLI eye-in-hand: {mm:.3f} mm {deg:.4f} deg")
    assert mm < 1.0 and deg < 0.2
    assert he["serial"] == "123456789012" and he["residuals"]["rms_mm"] < 1.0 and "TSAI" in he["methods"]
    v0 = he["per_view"]["img_00.png"]
    assert v0["pnp_rms_px"] < 0.3 and transform_delta(np.array(v0["T_camera_board"]), scene.T_cam_board[0])[1] < 2.0
    # verify on the same rig says it holds (exit 0); with the camera "bumped" by 1 cm it does not (exit 3)
    rc = edge_cli.main(["calibrate", "verify", "--images", str(d), "--intrinsics", str(intr_file),
                        "--handeye", str(he_file)])
    assert rc == 0 and "HOLDS" in capsys.readouterr().out
    he["T_gripper_camera"] = (T @ make_T(np.eye(3), [0.0, 0.01, 0.0])).tolist()
    he_file.write_text(yaml.safe_dump(he))
    rc = edge_cli.main(["calibrate", "verify", "--images", str(d), "--intrinsics", str(intr_file),
                        "--handeye", str(he_file)])
    assert rc == 3 and "does NOT hold" in capsys.readouterr().out


def test_capture_sim_then_eye_to_hand(tmp_path, capsys, camera):
    views = tmp_path / "views"
    assert edge_cli.main(["calibrate", "capture", "--sim", "--mode", "eye-to-hand", "--n-views", "12", "--seed", "7",
                          "--out", str(views)]) == 0
    assert "saved 12 views" in capsys.readouterr().out
    # no --board, no --serial, no --poses: all come from the capture session
    assert edge_cli.main(["calibrate", "intrinsics", "--images", str(views), "--out", str(tmp_path / "i.yaml")]) == 0
    assert edge_cli.main(["calibrate", "handeye", "--images", str(views), "--intrinsics", str(tmp_path / "i.yaml"),
                          "--mode", "eye-to-hand", "--out", str(tmp_path / "h.yaml")]) == 0
    he = yaml.safe_load((tmp_path / "h.yaml").read_text())
    from calib.capture import SimBoardRig
    from calib.board import parse_board

    truth = SimBoardRig(parse_board(SPEC), n=12, mode="eye-to-hand", seed=7).scene.X
    deg, mm = transform_delta(np.array(he["T_base_camera"]), truth)
    print(f"CLI eye-to-hand: {mm:.3f} mm {deg:.4f} deg")
    assert mm < 1.0 and deg < 0.2 and he["serial"] == "sim-board"


def test_extrinsics_cli(tmp_path, capsys, camera):
    T_ab = make_T(synth.rodrigues([0.05, -0.25, 0.03]), [0.15, 0.01, 0.02])
    views = synth.multi_camera_views(SPEC, {"A": np.eye(4), "B": T_ab}, 8, camera, np.random.default_rng(5))
    files = []
    for s, vs in views.items():
        (tmp_path / s).mkdir()
        for i, T in enumerate(vs):
            write_image(tmp_path / s / f"f{i}.png", synth.render_view(SPEC, T, camera, rng=np.random.default_rng(i)))
        from calib.store import Intrinsics, save_intrinsics

        f = tmp_path / f"{s}.yaml"
        save_intrinsics(f, Intrinsics(640, 480, camera.K[0, 0], camera.K[1, 1], camera.K[0, 2], camera.K[1, 2],
                                      list(camera.dist), 0.05, SPEC, s))
        files.append(str(f))
    out = tmp_path / "ex.yaml"
    rc = edge_cli.main(["calibrate", "extrinsics", "--images", str(tmp_path / "A"), str(tmp_path / "B"),
                        "--intrinsics", *files, "--out", str(out)])
    assert rc == 0
    ex = yaml.safe_load(out.read_text())
    deg, mm = transform_delta(np.array(ex["cameras"]["B"]["T_ref_camera"]), T_ab)
    assert ex["reference"] == "A" and mm < 1.0 and deg < 0.2
    assert edge_cli.main(["calibrate", "verify", "--images", str(tmp_path / "A"), str(tmp_path / "B"),
                          "--intrinsics", *files, "--extrinsics", str(out)]) == 0


def test_degenerate_poses_give_a_clear_cli_error(tmp_path, camera, capsys):
    """Pure translations of the gripper (all poses parallel): refused with what to do, not a wrong answer."""
    X = make_T(synth.rodrigues([0.05, -0.08, 0.3]), [0.032, -0.047, 0.085])
    (T0,) = synth.random_board_views(SPEC, 1, camera, np.random.default_rng(9), distance=(0.42, 0.45))
    F = np.eye(4)  # board in base
    T_base_cam0 = F @ inv_T(T0)
    rng = np.random.default_rng(0)
    Tc, Tg = [], []
    for _ in range(8):
        T_base_cam = make_T(T_base_cam0[:3, :3], T_base_cam0[:3, 3] + rng.uniform(-0.03, 0.03, 3))
        Tc.append(inv_T(T_base_cam) @ F)
        Tg.append(T_base_cam @ inv_T(X))
    scene = synth.HandEyeScene("eye-in-hand", X, F, Tg, Tc)
    _write_scene(tmp_path / "v", scene, camera)
    from calib.store import Intrinsics, save_intrinsics

    save_intrinsics(tmp_path / "i.yaml", Intrinsics(640, 480, *camera.K[[0, 1, 0, 1], [0, 1, 2, 2]], list(camera.dist),
                                                    0.05, SPEC, "1"))
    rc = edge_cli.main(["calibrate", "handeye", "--images", str(tmp_path / "v"), "--intrinsics",
                        str(tmp_path / "i.yaml"), "--mode", "eye-in-hand", "--out", str(tmp_path / "h.yaml")])
    err = capsys.readouterr().err
    assert rc == 1 and "pure translations" in err and "rotated" in err
    assert not (tmp_path / "h.yaml").exists()


def test_board_command_writes_png_and_pdf(tmp_path, capsys):
    assert edge_cli.main(["calibrate", "board", "--board", SPEC, "--out", str(tmp_path / "b"), "--dpi", "100",
                          "--self-check", "--json"]) == 0
    assert (tmp_path / "b.png").stat().st_size > 1000 and (tmp_path / "b.pdf").read_bytes()[:4] == b"%PDF"
    summary = json.loads(capsys.readouterr().out)
    assert summary["paper"] == "A3"
    sc = summary["self_check"]
    assert sc["fx_err_px"] < 1.0 and sc["handeye_mm"] < 1.0 and sc["handeye_deg"] < 0.2


def _run(*argv, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120, **kw)


def test_errors_print_without_traceback(tmp_path):
    r = _run("-m", "edge.cli", "calibrate", "intrinsics", "--images", str(tmp_path), "--board", SPEC, "--out", "x.yaml")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"no images" in r.stderr and str(tmp_path) in r.stderr
    (tmp_path / "blank.png").write_bytes(b"")
    r = _run("-m", "edge.cli", "calibrate", "intrinsics", "--images", str(tmp_path), "--board", "charuco:9,6,35,26,X")
    assert r.returncode == 1 and "metres" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("leaf", LEAVES)
def test_every_help_has_an_example(leaf, capsys):
    with pytest.raises(SystemExit) as e:
        edge_cli.main(["calibrate", leaf, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and f"imagewam-edge calibrate {leaf}" in out


def test_calib_imports_nothing_heavy():
    code = (
        "import sys, calib, calib.cli, calib.store, calib.errors, calib.geometry; "
        "bad = [m for m in ('cv2', 'torch', 'quantize', 'drivers', 'matplotlib') if m in sys.modules]; "
        # the one error root, and the one CLI parser helper calib.cli builds its parsers with (numpy, argparse)
        "bad += [m for m in sys.modules if m.startswith('edge.') and m not in ('edge.errors', 'edge.cli_util')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = _run("-c", code)
    assert r.returncode == 0, r.stdout + r.stderr


def test_handeye_refuses_intrinsics_of_another_camera_or_resolution(eye_in_hand_dir, camera, tmp_path, capsys):
    d, _ = eye_in_hand_dir
    from calib.dataset import write_session
    from calib.store import Intrinsics, save_intrinsics

    views = tmp_path / "v"
    views.mkdir()
    for p in d.iterdir():
        (views / p.name).write_bytes(p.read_bytes())
    write_session(views, {"serial": "111", "board": SPEC})
    args = ["calibrate", "handeye", "--images", str(views), "--mode", "eye-in-hand", "--out", str(tmp_path / "h.yaml")]
    save_intrinsics(tmp_path / "other.yaml", Intrinsics(640, 480, 615, 612, 322, 237, [0.0] * 5, 0.1, SPEC, "222"))
    assert edge_cli.main(args + ["--intrinsics", str(tmp_path / "other.yaml")]) == 1
    assert "is for camera serial 222 but the camera in use is 111" in capsys.readouterr().err
    save_intrinsics(tmp_path / "hd.yaml", Intrinsics(1280, 720, 915, 912, 640, 360, [0.0] * 5, 0.1, SPEC, "111"))
    assert edge_cli.main(args + ["--intrinsics", str(tmp_path / "hd.yaml")]) == 1
    assert "calibrated at 1280x720 but the camera streams 640x480" in capsys.readouterr().err
    assert not (tmp_path / "h.yaml").exists()
