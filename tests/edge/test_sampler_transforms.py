import json

import numpy as np
import pytest

from edge.errors import CheckpointError, ConfigError
from edge.normalize import load_normalizers, make_normalizer
from edge.sampler import euler_sample, flow_sigmas
from edge.transforms import compose_canvas, get_canvas, libero_gripper, to_model_pixels


def test_sigmas_equal_design():
    # DESIGN §2: N = 10, shift 5
    expected = [1, .978, .952, .921, .882, .833, .769, .682, .556, .357, 0]
    np.testing.assert_allclose(np.round(flow_sigmas(10, 5.0), 3), expected, atol=1e-12)
    assert flow_sigmas(10, 5.0)[-1] == 0.0


def test_euler_recovers_x0_for_the_exact_velocity():
    # x_s = (1-s) x0 + s e  =>  v = e - x0 is constant along the path: Euler is exact, in float32
    rng = np.random.default_rng(0)
    x0, e = rng.standard_normal((1, 16, 7)).astype(np.float32), rng.standard_normal((1, 16, 7)).astype(np.float32)
    out = euler_sample(e, lambda x, s, i: e - x0, flow_sigmas(10, 5.0))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, x0, atol=1e-5)


def test_minmax_normalizer_round_trip_and_clamp():
    stats = {"global_min": [0.0, -2.0, 1.0], "global_max": [1.0, 2.0, 1.0]}
    n = make_normalizer(stats, "min/max")
    np.testing.assert_allclose(n.forward([0.0, -2.0, 1.0]), [-1, -1, 0], atol=1e-6)  # zero-range dim only shifts
    np.testing.assert_allclose(n.forward([1.0, 2.0, 1.0]), [1, 1, 0], atol=1e-6)
    np.testing.assert_allclose(n.backward(n.forward([0.3, 0.5, 1.0])), [0.3, 0.5, 1.0], atol=1e-6)
    assert n.forward([100.0, 0, 1])[0] == 5.0  # clamped to +-5


def test_zscore_normalizer():
    n = make_normalizer({"global_mean": [1.0], "global_std": [2.0]}, "z-score")
    np.testing.assert_allclose(n.forward([5.0]), [2.0], atol=1e-6)
    np.testing.assert_allclose(n.backward([2.0]), [5.0], atol=1e-6)


def test_stats_file_errors_name_the_field(tmp_path):
    bad = tmp_path / "dataset_stats.json"
    bad.write_text(json.dumps({"action": {"default": {"global_min": [0]}}, "state": {"default": {}}}))
    with pytest.raises(CheckpointError, match="state.default"):
        load_normalizers(bad, "min/max")
    with pytest.raises(CheckpointError, match="not found"):
        load_normalizers(tmp_path / "nope.json", "min/max")


def test_libero_gripper_postprocess():
    a = np.array([[0.1, 0.0, 0, 0, 0, 0, 0.9], [0.1, 0, 0, 0, 0, 0, 0.2]], np.float32)
    out = libero_gripper(a)
    assert out[0, -1] == -1.0 and out[1, -1] == 1.0  # 2g-1 -> +0.8 / -0.6, sign flip, binarise
    assert out[0, 0] == pytest.approx(0.1)


def test_libero_canvas_rotates_and_places_cameras():
    agent = np.zeros((224, 224, 3), np.uint8)
    agent[0, 0] = [255, 0, 0]  # top-left red
    wrist = np.full((224, 224, 3), 7, np.uint8)
    canvas = compose_canvas([agent, wrist], get_canvas("libero"))
    assert canvas.shape == (224, 448, 3)
    assert tuple(canvas[223, 223]) == (255, 0, 0)  # rotated 180 deg
    assert (canvas[:, 224:] == 7).all()
    px = to_model_pixels(canvas)
    assert px.shape == (1, 3, 224, 448) and px.min() >= -1 and px.max() <= 1
    with pytest.raises(ConfigError, match="2 camera"):
        compose_canvas([agent], get_canvas("libero"))


def test_canvas_crop_resize_keeps_aspect():
    img = np.zeros((480, 640, 3), np.uint8)
    img[:, :80] = 255  # a band at the left edge is cropped away by the centre crop
    canvas = compose_canvas([img, img], get_canvas("libero"))
    assert canvas.shape == (224, 448, 3)
    assert canvas[:, :224].max() == 0  # after the 180 rotation the band is on the right and cropped
