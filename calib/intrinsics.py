"""Camera intrinsics from ChArUco views: view rejection, calibrateCamera, per-view errors, coverage report,
comparison with factory (RealSense) intrinsics."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from calib.board import BoardSpec, Detection, usable_reason
from calib.errors import DegenerateMotionError, InsufficientViewsError, require_cv2
from calib.geometry import rotation_angle_deg
from calib.store import Intrinsics, now_iso

log = logging.getLogger(__name__)

MIN_VIEWS = 6
MAX_VIEW_RMS_PX = 1.0  # a view whose own RMS exceeds max(this, 3x median) is an outlier (blur, misdetection)
MIN_TILT_DEG = 10.0  # fronto-parallel views do not constrain the focal length
COVERAGE_GRID = (8, 6)


@dataclass
class IntrinsicsResult:
    intrinsics: Intrinsics
    per_view_px: dict[str, float]
    rejected: dict[str, str]
    coverage: dict
    std: dict[str, float]
    poses: dict[str, np.ndarray] = field(default_factory=dict)  # T_cam_board per used view


def _calibrate(cv2, obj, img, size, flags):
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    rms, K, dist, rvecs, tvecs, std_in, _, per_view = cv2.calibrateCameraExtended(
        obj, img, size, None, None, flags=flags, criteria=crit
    )
    return rms, K, dist.reshape(-1), rvecs, tvecs, std_in.reshape(-1), per_view.reshape(-1)


def coverage_report(detections: list[Detection], size: tuple[int, int], grid=COVERAGE_GRID) -> dict:
    """Where in the image corners were seen: counts per cell of a grid, fraction of cells hit, an ASCII map."""
    gx, gy = grid
    counts = np.zeros((gy, gx), dtype=int)
    w, h = size
    for d in detections:
        if len(d) == 0:
            continue
        cx = np.clip((d.corners[:, 0] / w * gx).astype(int), 0, gx - 1)
        cy = np.clip((d.corners[:, 1] / h * gy).astype(int), 0, gy - 1)
        np.add.at(counts, (cy, cx), 1)
    covered = counts > 0
    border = np.concatenate([covered[0], covered[-1], covered[1:-1, 0], covered[1:-1, -1]])
    rows = ["".join("." if c == 0 else (str(c) if c < 10 else "#") for c in row) for row in counts]
    return {
        "grid": [gx, gy],
        "cells_covered": round(float(covered.mean()), 3),
        "border_cells_covered": round(float(border.mean()), 3),
        "counts": counts.tolist(),
        "map": rows,
    }


def calibrate_intrinsics(
    detections: dict[str, Detection],
    size: tuple[int, int],
    spec: BoardSpec,
    *,
    serial: str | None = None,
    min_views: int = MIN_VIEWS,
    min_corners: int = 6,
    max_view_rms_px: float = MAX_VIEW_RMS_PX,
    fix_k3: bool = False,
    rejected: dict[str, str] | None = None,
    source: str = "",
) -> IntrinsicsResult:
    """Calibrate from per-image detections. Raises InsufficientViewsError / DegenerateMotionError instead of
    returning an unconstrained answer."""
    cv2 = require_cv2()
    rejected = dict(rejected or {})
    for name, d in detections.items():
        if name not in rejected:
            reason = usable_reason(d, spec, min_corners)
            if reason:
                rejected[name] = reason
    names = [n for n in detections if n not in rejected]
    where = f" in {source}" if source else ""
    if len(names) < min_views:
        why = "; ".join(f"{n}: {r}" for n, r in list(rejected.items())[:5])
        raise InsufficientViewsError(
            f"only {len(names)} usable views{where} (need >= {min_views}): capture more views with the whole board "
            f"in sharp focus, tilted 15-45 deg, covering the image corners" + (f" (rejected: {why})" if why else "")
        )
    flags = cv2.CALIB_FIX_K3 if fix_k3 else 0
    for _round in range(3):
        obj = [detections[n].object_points(spec).astype(np.float32) for n in names]
        img = [detections[n].corners.astype(np.float32) for n in names]
        rms, K, dist, rvecs, tvecs, std, per_view = _calibrate(cv2, obj, img, size, flags)
        limit = max(max_view_rms_px, 3.0 * float(np.median(per_view)))
        bad = [i for i in np.argsort(-per_view) if per_view[i] > limit]
        bad = bad[: max(0, len(names) - min_views)]
        if not bad:
            break
        for i in bad:
            rejected[names[i]] = f"reprojection error {per_view[i]:.2f} px > {limit:.2f} px (blur or misdetection)"
            log.info("%s: rejected as outlier (%.2f px)", names[i], per_view[i])
        names = [n for i, n in enumerate(names) if i not in set(bad)]
    tilts = [
        rotation_angle_deg(_unit_z_to(cv2.Rodrigues(r)[0][:, 2])) for r in rvecs
    ]
    if sum(t >= MIN_TILT_DEG for t in tilts) < 2:
        raise DegenerateMotionError(
            f"the board is nearly fronto-parallel in all views{where} (max tilt {max(tilts):.1f} deg): the focal "
            f"length is not observable; capture views with the board tilted 15-45 deg in different directions"
        )
    rel_std = max(std[0] / K[0, 0], std[1] / K[1, 1])
    if rel_std > 0.02:
        raise DegenerateMotionError(
            f"focal length is poorly constrained{where} (std {100 * rel_std:.1f}% of fx): capture more views with the "
            "board tilted in different directions and at different distances"
        )
    pv = {n: round(float(e), 4) for n, e in zip(names, per_view)}
    cov = coverage_report([detections[n] for n in names], size)
    std_d = {k: round(float(v), 4) for k, v in zip(["fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3"], std)}
    if cov["border_cells_covered"] < 0.5:
        log.warning(
            "corners cover only %.0f%% of the image border cells: distortion near the edges is extrapolated; "
            "add views with the board near the image corners", 100 * cov["border_cells_covered"]
        )
    intr = Intrinsics(
        width=int(size[0]), height=int(size[1]),
        fx=float(K[0, 0]), fy=float(K[1, 1]), cx=float(K[0, 2]), cy=float(K[1, 2]),
        dist=[float(v) for v in dist], rms_px=float(rms), board=str(spec), serial=serial, date=now_iso(),
        extra={
            "n_views": len(names),
            "per_view_rms_px": pv,
            "rejected_views": rejected,
            "std": std_d,
            "coverage": {k: cov[k] for k in ("grid", "cells_covered", "border_cells_covered", "map")},
        },
    )
    poses = {}
    for n, r, t in zip(names, rvecs, tvecs):
        T = np.eye(4)
        T[:3, :3] = cv2.Rodrigues(r)[0]
        T[:3, 3] = np.asarray(t).reshape(3)
        poses[n] = T
    return IntrinsicsResult(intr, pv, rejected, cov, std_d, poses)


def _unit_z_to(v: np.ndarray) -> np.ndarray:
    """Rotation taking the optical axis to the board normal (its angle is the board tilt)."""
    z = np.array([0.0, 0.0, 1.0])
    v = np.asarray(v, float) / np.linalg.norm(v)
    if v[2] < 0:
        v = -v
    axis = np.cross(z, v)
    s, c = np.linalg.norm(axis), float(np.dot(z, v))
    if s < 1e-12:
        return np.eye(3)
    k = axis / s
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * Kx + (1 - c) * Kx @ Kx


def model_displacement_px(K1, d1, K2, d2, size, step: int = 16) -> tuple[float, float]:
    """(max, mean) pixel distance between where two camera models map the same rays, over the image."""
    cv2 = require_cv2()
    w, h = size
    xs, ys = np.meshgrid(np.arange(0, w, step) + 0.5, np.arange(0, h, step) + 0.5)
    px = np.stack([xs.ravel(), ys.ravel()], axis=1).reshape(-1, 1, 2).astype(np.float64)
    rays = cv2.undistortPointsIter(px, K1, np.asarray(d1, float), None, None,
                                   (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 1e-10))
    pts = np.concatenate([rays.reshape(-1, 2), np.ones((rays.shape[0], 1))], axis=1)
    back, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), K2, np.asarray(d2, float))
    d = np.linalg.norm(back.reshape(-1, 2) - px.reshape(-1, 2), axis=1)
    return float(d.max()), float(d.mean())


def compare_intrinsics(ours: Intrinsics, other: Intrinsics) -> dict:
    """Differences to another model (e.g. the RealSense factory intrinsics of the same stream)."""
    mx, mean = model_displacement_px(ours.K, ours.dist_array, other.K, other.dist_array, ours.size)
    return {
        "dfx_px": round(ours.fx - other.fx, 3),
        "dfy_px": round(ours.fy - other.fy, 3),
        "dcx_px": round(ours.cx - other.cx, 3),
        "dcy_px": round(ours.cy - other.cy, 3),
        "max_displacement_px": round(mx, 3),
        "mean_displacement_px": round(mean, 3),
    }
