from __future__ import annotations

import numpy as np
import pytest
import yaml

from calib.errors import CalibrationFileError, CalibrationMismatchError
from calib.geometry import make_T, rodrigues
from calib.store import (
    Extrinsics, HandEye, Intrinsics, calibration_path, load_camera_calibration, load_extrinsics, load_handeye,
    load_intrinsics, save_extrinsics, save_handeye, save_intrinsics,
)


def _intr(serial="123456789012"):
    return Intrinsics(640, 480, 615.2, 612.1, 322.4, 237.0, [0.1, -0.2, 0.001, -0.001, 0.09], 0.05,
                      board="charuco:9,6,0.035,0.026,DICT_5X5_100", serial=serial)


def test_intrinsics_roundtrip_and_format(tmp_path):
    p = save_intrinsics(tmp_path / "i.yaml", _intr())
    raw = yaml.safe_load(p.read_text())
    for key in ("version", "width", "height", "fx", "fy", "cx", "cy", "dist", "rms_px", "board", "serial", "date"):
        assert key in raw
    assert raw["serial"] == "123456789012" and isinstance(raw["serial"], str)  # not turned into an int by YAML
    got = load_intrinsics(p, expect_serial="123456789012", expect_size=(640, 480))
    assert got.fx == 615.2 and got.dist == [0.1, -0.2, 0.001, -0.001, 0.09]
    assert np.allclose(got.K, [[615.2, 0, 322.4], [0, 612.1, 237.0], [0, 0, 1]])


def test_refuses_other_serial_and_resolution(tmp_path):
    p = save_intrinsics(tmp_path / "i.yaml", _intr())
    with pytest.raises(CalibrationMismatchError, match="is for camera serial 123456789012 but the camera in use is 999"):
        load_intrinsics(p, expect_serial="999")
    with pytest.raises(CalibrationMismatchError, match="calibrated at 640x480 but the camera streams 1280x720"):
        load_intrinsics(p, expect_size=(1280, 720))
    q = save_intrinsics(tmp_path / "noserial.yaml", _intr(serial=None))
    with pytest.raises(CalibrationMismatchError, match="records no camera serial"):
        load_intrinsics(q, expect_serial="123456789012")


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda d: d.pop("version"), "'version' is missing"),
        (lambda d: d.update(version=99), "newer than this imagewam-edge supports"),
        (lambda d: d.update(fx="big"), "'fx' is missing or not a finite number"),
        (lambda d: d.update(fx=-3.0), "'fx' must be > 0"),
        (lambda d: d.update(dist=[0.1, 0.2]), "'dist' must be a list"),
        (lambda d: d.update(cx=5000.0), "outside the 640x480 image"),
        (lambda d: d.update(kind="handeye"), "is a handeye file, not intrinsics"),
    ],
)
def test_malformed_intrinsics_are_refused(tmp_path, edit, words):
    d = _intr().to_dict()
    edit(d)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(CalibrationFileError, match=words):
        load_intrinsics(p)


def test_missing_file_says_how_to_make_it(tmp_path):
    with pytest.raises(CalibrationFileError, match="not found; create it with: imagewam-edge calibrate intrinsics"):
        load_intrinsics(tmp_path / "nope.yaml")


def test_handeye_roundtrip_both_modes(tmp_path):
    T = make_T(rodrigues([0.1, 0.2, 0.3]), [0.01, 0.02, 0.03])
    for mode, key in (("eye-in-hand", "T_gripper_camera"), ("eye-to-hand", "T_base_camera")):
        p = save_handeye(tmp_path / f"{mode}.yaml", HandEye(mode, T, "42", residuals={"rms_mm": 0.3}))
        raw = yaml.safe_load(p.read_text())
        assert np.allclose(raw[key], T) and len(raw[key]) == 4 and len(raw[key][0]) == 4
        he = load_handeye(p, expect_serial="42", expect_mode=mode)
        assert np.allclose(he.T, T) and he.residuals["rms_mm"] == 0.3
    with pytest.raises(CalibrationMismatchError, match="eye-to-hand calibration but eye-in-hand is configured"):
        load_handeye(p, expect_mode="eye-in-hand")
    raw[key][0][0] = 2.0  # not a rotation any more
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(CalibrationFileError, match="not a rigid transform"):
        load_handeye(p)


def test_extrinsics_roundtrip(tmp_path):
    T = make_T(rodrigues([0.0, 0.2, 0.0]), [0.15, 0.0, 0.0])
    p = save_extrinsics(tmp_path / "x.yaml", Extrinsics("A", {"A": np.eye(4), "B": T}))
    ex = load_extrinsics(p, expect_serials=["A", "B"])
    assert np.allclose(ex.T_ref_cam["B"], T)
    with pytest.raises(CalibrationMismatchError, match=r"no extrinsics for camera\(s\) \['C'\]"):
        load_extrinsics(p, expect_serials=["A", "C"])


def test_files_keyed_by_serial(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEWAM_CALIB_DIR", str(tmp_path))
    assert calibration_path("123", "intrinsics") == tmp_path / "123" / "intrinsics.yaml"
    save_intrinsics(calibration_path("123", "intrinsics"), _intr("123"))
    intr, he = load_camera_calibration("123", (640, 480))
    assert intr.serial == "123" and he is None
    save_handeye(calibration_path("123", "handeye"), HandEye("eye-to-hand", np.eye(4), "123"))
    assert load_camera_calibration("123", (640, 480))[1].mode == "eye-to-hand"
    with pytest.raises(CalibrationFileError, match="not found"):
        load_camera_calibration("456", (640, 480))
    with pytest.raises(CalibrationMismatchError, match="1280x720"):
        load_camera_calibration("123", (1280, 720))
