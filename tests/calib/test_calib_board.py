from __future__ import annotations

import numpy as np
import pytest

from calib import synth
from calib.board import parse_board, render_board, usable_reason, write_printable
from calib.errors import BoardSpecError

SPEC = "charuco:9,6,0.035,0.026,DICT_5X5_100"


def test_parse_roundtrip():
    s = parse_board(SPEC)
    assert (s.squares_x, s.squares_y, s.square_m, s.marker_m, s.dictionary) == (9, 6, 0.035, 0.026, "DICT_5X5_100")
    assert str(s) == SPEC
    assert s.n_corners == 40
    assert np.allclose(s.corners_3d()[9], [0.035 * 2, 0.035 * 2, 0])  # id 9 = second row, first column


@pytest.mark.parametrize(
    "bad, words",
    [
        ("9,6,0.035,0.026,DICT_5X5_100", "expected charuco:"),
        ("chess:9,6,0.035,0.026,DICT_5X5_100", "not supported"),
        ("charuco:9,6,0.035,DICT_5X5_100", "4 fields"),
        ("charuco:9,6,35,26,DICT_5X5_100", "metres"),
        ("charuco:9,6,0.035,0.04,DICT_5X5_100", "smaller than SQUARE_M"),
        ("charuco:9,6,0.035,0.026,DICT_FOO", "unknown ArUco dictionary"),
        ("charuco:20,20,0.035,0.026,DICT_4X4_50", "needs 200 markers"),
        ("charuco:x,6,0.035,0.026,DICT_5X5_100", "invalid literal"),
    ],
)
def test_parse_errors_say_what_is_wrong(bad, words):
    with pytest.raises(BoardSpecError, match=words):
        parse_board(bad)


def test_render_is_true_scale(spec, detector):
    img = render_board(spec, px_per_square=50, margin_squares=1.0)
    assert img.shape == (6 * 50 + 100, 9 * 50 + 100)
    d = detector.detect(img)
    assert len(d) == spec.n_corners
    # corner k at (margin + (col+1)*square) px, pixel centres at integer - 0.5
    expect = spec.corners_3d()[d.ids, :2] / spec.square_m * 50 + 50 - 0.5
    assert np.abs(d.corners - expect).max() < 0.05


def test_synthetic_detection_matches_ground_truth(spec, detector, camera, intrinsics_views):
    poses, dets = intrinsics_views
    errs = []
    for T, d in zip(poses, dets.values()):
        assert len(d) >= 20
        gt = synth.project_corners(spec, T, camera)[d.ids]
        errs.append(np.linalg.norm(d.corners - gt, axis=1))
    e = np.concatenate(errs)
    assert np.median(e) < 0.1 and e.max() < 0.5


def test_blank_image_is_not_usable(spec, detector):
    d = detector.detect(np.full((480, 640), 128, np.uint8))
    assert len(d) == 0
    assert usable_reason(d, spec) == "board not found"


def test_printable_pdf_and_png_at_true_size(spec, tmp_path):
    info = write_printable(spec, str(tmp_path / "board"), dpi=150)
    pdf = (tmp_path / "board.pdf").read_bytes()
    import re

    box = [float(v) for v in re.search(rb"/MediaBox \[\s*([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+)", pdf).groups()]
    w_mm, h_mm = (box[2] - box[0]) / 72 * 25.4, (box[3] - box[1]) / 72 * 25.4
    assert abs(w_mm - info["page_mm"][0]) < 0.5 and abs(h_mm - info["page_mm"][1]) < 0.5
    assert abs(w_mm - (315 + 30)) < 0.5  # 9 squares of 35 mm + 2 x 15 mm margins
    assert info["paper"] == "A3"
    from PIL import Image

    with Image.open(tmp_path / "board.png") as im:
        assert abs(im.size[0] / 150 * 25.4 - w_mm) < 1.0
        assert round(im.info["dpi"][0]) == 150
        gray = np.asarray(im.convert("L"))
    # the board in the PNG is detected and 35 mm squares measure 35 mm at 150 dpi
    from calib.board import BoardDetector

    d = BoardDetector(spec).detect(gray)
    assert len(d) == spec.n_corners
    nx = spec.squares_x - 1
    a, b = list(d.ids).index(0), list(d.ids).index(nx - 1)
    mm = np.linalg.norm(d.corners[b] - d.corners[a]) / 150 * 25.4
    assert abs(mm - (nx - 1) * 35.0) < 0.6
