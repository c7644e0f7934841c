"""Synthetic ChArUco views through known intrinsics (with distortion) and known poses: ground truth for tests
and for `calibrate board --self-check`.

Rendering is exact inverse mapping: every output (sub)pixel is undistorted to a ray, intersected with the board
plane and looked up in a high-resolution board texture; 2x2 supersampling with a box filter anti-aliases.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from calib.board import BoardSpec, as_spec, render_board
from calib.errors import require_cv2
from calib.geometry import inv_T, look_at, make_T, rodrigues

# A RealSense-like 640x480 colour camera with clearly visible distortion.
DEFAULT_SIZE = (640, 480)
DEFAULT_K = np.array([[615.0, 0.0, 322.5], [0.0, 612.0, 237.0], [0.0, 0.0, 1.0]])
DEFAULT_DIST = np.array([0.11, -0.23, 0.0012, -0.0008, 0.09])


@dataclass
class Camera:
    K: np.ndarray = field(default_factory=lambda: DEFAULT_K.copy())
    dist: np.ndarray = field(default_factory=lambda: DEFAULT_DIST.copy())
    size: tuple[int, int] = DEFAULT_SIZE


@lru_cache(maxsize=4)
def _normalized_grid(K_bytes: bytes, dist_bytes: bytes, size: tuple[int, int], ss: int) -> np.ndarray:
    """Undistorted normalized coordinates (H*ss, W*ss, 2) of the supersampled pixel grid of a camera."""
    cv2 = require_cv2()
    K = np.frombuffer(K_bytes).reshape(3, 3)
    dist = np.frombuffer(dist_bytes)
    w, h = size
    offs = (np.arange(ss) + 0.5) / ss - 0.5
    xs = (np.arange(w)[:, None] + offs[None, :]).reshape(-1)
    ys = (np.arange(h)[:, None] + offs[None, :]).reshape(-1)
    X, Y = np.meshgrid(xs, ys)
    pts = np.stack([X, Y], axis=-1).reshape(-1, 1, 2)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-12)
    und = cv2.undistortPointsIter(pts, K, dist, None, None, crit)
    return und.reshape(h * ss, w * ss, 2)


@lru_cache(maxsize=4)
def _texture(spec: BoardSpec, px_per_square: int, margin_squares: float) -> np.ndarray:
    cv2 = require_cv2()
    tex = render_board(spec, px_per_square, margin_squares).astype(np.float32)
    return cv2.GaussianBlur(tex, (0, 0), 0.6)


def render_view(
    spec: BoardSpec | str,
    T_cam_board: np.ndarray,
    camera: Camera | None = None,
    *,
    supersample: int = 2,
    px_per_square: int = 80,
    background: float = 70.0,
    noise_std: float = 1.5,
    rng: np.random.Generator | None = None,
    rgb: bool = False,
) -> np.ndarray:
    """uint8 image (H, W) or (H, W, 3) RGB of the board (on white paper, one square of margin) seen at T_cam_board."""
    cv2 = require_cv2()
    spec = as_spec(spec)
    camera = camera or Camera()
    w, h = camera.size
    margin_sq = 0.75
    tex = _texture(spec, px_per_square, margin_sq)
    norm = _normalized_grid(
        np.ascontiguousarray(camera.K, dtype=float).tobytes(),
        np.ascontiguousarray(camera.dist, dtype=float).reshape(-1).tobytes(),
        tuple(camera.size),
        supersample,
    )
    # ray (x, y, 1) hits the board plane z_board = 0: H = [r1 r2 t] maps board (X, Y, 1) -> camera ray
    H = np.column_stack([T_cam_board[:3, 0], T_cam_board[:3, 1], T_cam_board[:3, 3]])
    Hinv = np.linalg.inv(H)
    x, y = norm[..., 0], norm[..., 1]
    bx = Hinv[0, 0] * x + Hinv[0, 1] * y + Hinv[0, 2]
    by = Hinv[1, 0] * x + Hinv[1, 1] * y + Hinv[1, 2]
    bw = Hinv[2, 0] * x + Hinv[2, 1] * y + Hinv[2, 2]
    behind = bw <= 0  # the plane is behind the camera along this ray
    ppm = px_per_square / spec.square_m
    m = margin_sq * spec.square_m
    map_x = ((bx / bw + m) * ppm - 0.5).astype(np.float32)
    map_y = ((by / bw + m) * ppm - 0.5).astype(np.float32)
    map_x[behind] = -1e6
    map_y[behind] = -1e6
    img = cv2.remap(tex, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=background)
    if supersample > 1:
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    # shading: print contrast is never 0..255
    img = 25.0 + img * (215.0 / 255.0)
    if noise_std > 0:
        rng = rng or np.random.default_rng(0)
        img = img + rng.normal(0.0, noise_std, img.shape)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    if rgb:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return img


def project_corners(spec: BoardSpec | str, T_cam_board: np.ndarray, camera: Camera | None = None) -> np.ndarray:
    """Ground-truth (N, 2) pixel positions of all chessboard corners (with distortion)."""
    cv2 = require_cv2()
    spec = as_spec(spec)
    camera = camera or Camera()
    rvec, _ = cv2.Rodrigues(T_cam_board[:3, :3])
    pts, _ = cv2.projectPoints(spec.corners_3d(), rvec, T_cam_board[:3, 3], camera.K, camera.dist)
    return pts.reshape(-1, 2)


def random_board_views(
    spec: BoardSpec | str,
    n: int,
    camera: Camera | None = None,
    rng: np.random.Generator | None = None,
    distance=(0.30, 0.55),
    max_tilt_deg: float = 40.0,
    min_visible: float = 0.7,
) -> list[np.ndarray]:
    """n camera-from-board poses T_cam_board that view the board tilted, from varied positions, spread across
    the image (so corners reach the image borders), with at least `min_visible` of the corners in the image."""
    spec = as_spec(spec)
    camera = camera or Camera()
    rng = rng or np.random.default_rng(0)
    bw, bh = spec.size_m
    center = np.array([bw / 2, bh / 2, 0.0])
    w, h = camera.size
    out: list[np.ndarray] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n:
            raise RuntimeError("could not sample enough visible views; use a smaller board or a wider camera")
        d = rng.uniform(*distance)
        tilt = np.radians(rng.uniform(5.0, max_tilt_deg))
        az = rng.uniform(0, 2 * np.pi)
        # camera on the -z side of the board (board z points away from the camera)
        direction = np.array([np.sin(tilt) * np.cos(az), np.sin(tilt) * np.sin(az), -np.cos(tilt)])
        target = center + np.array([rng.uniform(-0.35, 0.35) * bw, rng.uniform(-0.35, 0.35) * bh, 0.0])
        T_board_cam = look_at(target + d * direction, target, up=(0.0, -1.0, 0.0))
        roll = make_T(rodrigues([0, 0, rng.uniform(-0.5, 0.5)]), np.zeros(3))
        # shift the optical axis off the target so the board moves towards the image borders
        shift = make_T(rodrigues([rng.uniform(-0.25, 0.25), rng.uniform(-0.3, 0.3), 0.0]), np.zeros(3))
        T_cam_board = inv_T(T_board_cam @ roll @ shift)
        px = project_corners(spec, T_cam_board, camera)
        inside = (px[:, 0] > 8) & (px[:, 0] < w - 8) & (px[:, 1] > 8) & (px[:, 1] < h - 8)
        if inside.mean() >= min_visible and np.all((inv_T(T_cam_board) @ np.r_[center, 1])[2] < 0):
            out.append(T_cam_board)
    return out


@dataclass
class HandEyeScene:
    """Ground truth of a synthetic hand-eye session."""

    mode: str
    X: np.ndarray  # T_gripper_camera (eye-in-hand) or T_base_camera (eye-to-hand)
    T_fixed_board: np.ndarray  # T_base_board (eye-in-hand) or T_gripper_board (eye-to-hand)
    T_base_gripper: list[np.ndarray]
    T_cam_board: list[np.ndarray]


def handeye_scene(
    spec: BoardSpec | str,
    n: int,
    mode: str,
    camera: Camera | None = None,
    rng: np.random.Generator | None = None,
    pose_noise: tuple[float, float] = (0.0, 0.0),
) -> HandEyeScene:
    """Robot poses and board views consistent with a known hand-eye transform. `pose_noise` = (metres, degrees)
    of Gaussian noise on the reported T_base_gripper (robot kinematics is never perfect)."""
    spec = as_spec(spec)
    rng = rng or np.random.default_rng(0)
    views = random_board_views(spec, n, camera, rng)
    if mode == "eye-in-hand":
        X = make_T(rodrigues([0.05, -0.08, 0.3]), [0.032, -0.047, 0.085])  # T_gripper_camera
        F = make_T(rodrigues([np.pi, 0.0, 0.4]), [0.55, -0.10, 0.02])  # T_base_board (board on the table)
        Tg = [F @ inv_T(Tc) @ inv_T(X) for Tc in views]
    elif mode == "eye-to-hand":
        X = make_T(rodrigues([2.2, 0.3, -0.2]), [0.85, 0.35, 0.55])  # T_base_camera
        F = make_T(rodrigues([0.0, np.pi, 0.2]), [0.01, -0.02, 0.06])  # T_gripper_board (board on the flange)
        Tg = [X @ Tc @ inv_T(F) for Tc in views]
    else:
        raise ValueError(f"mode must be eye-in-hand or eye-to-hand, got {mode!r}")
    sigma_t, sigma_r = pose_noise
    if sigma_t or sigma_r:
        Tg = [
            T @ make_T(rodrigues(rng.normal(0, np.radians(sigma_r), 3)), rng.normal(0, sigma_t, 3)) for T in Tg
        ]
    return HandEyeScene(mode, X, F, Tg, views)


def multi_camera_views(
    spec: BoardSpec | str,
    T_ref_cam: dict[str, np.ndarray],
    n: int,
    camera: Camera | None = None,
    rng: np.random.Generator | None = None,
    min_visible: float = 0.6,
) -> dict[str, list[np.ndarray]]:
    """n simultaneous views per camera (T_cam_board) where every camera sees >= min_visible of the corners.
    The first key of T_ref_cam is the reference (identity)."""
    spec = as_spec(spec)
    camera = camera or Camera()
    rng = rng or np.random.default_rng(0)
    w, h = camera.size
    out: dict[str, list[np.ndarray]] = {s: [] for s in T_ref_cam}
    tries = 0
    while len(next(iter(out.values()))) < n:
        tries += 1
        if tries > 500 * n:
            raise RuntimeError("cameras do not see the board together often enough; move them closer together")
        (T_ref_board,) = random_board_views(spec, 1, camera, rng, distance=(0.4, 0.6), max_tilt_deg=30.0)
        cand = {s: inv_T(T) @ T_ref_board for s, T in T_ref_cam.items()}
        ok = True
        for T in cand.values():
            px = project_corners(spec, T, camera)
            inside = (px[:, 0] > 8) & (px[:, 0] < w - 8) & (px[:, 1] > 8) & (px[:, 1] < h - 8)
            ok &= bool(inside.mean() >= min_visible and T[2, 3] > 0.1)
        if ok:
            for s, T in cand.items():
                out[s].append(T)
    return out
