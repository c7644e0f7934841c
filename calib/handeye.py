"""Hand-eye calibration: board pose per view, every OpenCV solver, the most consistent solution, residuals.

eye-in-hand: camera on the gripper, board fixed in the world -> T_gripper_camera.
eye-to-hand: camera fixed, board held by the gripper         -> T_base_camera.
Consistency: with the solution X, every view implies the pose of the (fixed) board - T_base_board (eye-in-hand)
or T_gripper_board (eye-to-hand). Residuals are each view's disagreement with their mean, in mm (over the board
corners) and degrees. Methods are passed as `method=` keywords (positionally OpenCV silently uses TSAI).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from calib.board import BoardSpec, Detection
from calib.errors import (
    DegenerateMotionError,
    InconsistentDataError,
    InputFileError,
    InsufficientViewsError,
    require_cv2,
)
from calib.geometry import average_transforms, inv_T, make_T, rotation_angle_deg, rotation_axis

log = logging.getLogger(__name__)

MODES = ("eye-in-hand", "eye-to-hand")
HANDEYE_METHODS = ("TSAI", "PARK", "HORAUD", "ANDREFF", "DANIILIDIS")
ROBOT_WORLD_METHODS = ("SHAH", "LI")
MIN_VIEWS = 5
MIN_ROTATION_DEG = 5.0  # relative rotations smaller than this carry no hand-eye information
MIN_AXIS_SPREAD_DEG = 10.0  # rotation axes must differ by at least this much
MAX_PNP_RMS_PX = 2.0
# beyond these the data are inconsistent (wrong --mode, inverted poses, images not matching poses): refuse
MAX_MEDIAN_MM = 15.0
MAX_MEDIAN_DEG = 2.0


@dataclass
class HandEyeResult:
    mode: str
    T: np.ndarray  # T_gripper_camera or T_base_camera
    method: str
    T_fixed_board: np.ndarray  # T_base_board (eye-in-hand) or T_gripper_board (eye-to-hand)
    residuals: dict
    per_view: dict[str, dict]
    methods: dict[str, dict]
    outliers: dict[str, str] = field(default_factory=dict)
    views: list[str] = field(default_factory=list)


def board_poses(
    detections: dict[str, Detection], spec: BoardSpec, K: np.ndarray, dist: np.ndarray, max_rms_px: float = MAX_PNP_RMS_PX
) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, str]]:
    """T_cam_board per view (IPPE + LM refinement), its reprojection RMS, and views rejected (with why)."""
    cv2 = require_cv2()
    poses, rms, rejected = {}, {}, {}
    for name, d in detections.items():
        if len(d) < 6:
            rejected[name] = f"only {len(d)} corners" if len(d) else "board not found"
            continue
        obj = d.object_points(spec).astype(np.float64)
        img = d.corners.astype(np.float64)
        ok, rvec, tvec = cv2.solvePnP(obj, img, K, dist, flags=cv2.SOLVEPNP_IPPE)
        if not ok:
            rejected[name] = "solvePnP failed"
            continue
        rvec, tvec = cv2.solvePnPRefineLM(obj, img, K, dist, rvec, tvec)
        proj, _ = cv2.projectPoints(obj, rvec, tvec, K, dist)
        e = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - img) ** 2, axis=1))))
        if e > max_rms_px:
            rejected[name] = f"board pose reprojection {e:.2f} px > {max_rms_px} px (wrong intrinsics or blur)"
            continue
        poses[name] = make_T(cv2.Rodrigues(rvec)[0], tvec)
        rms[name] = e
    return poses, rms, rejected


def check_motion(T_base_gripper: list[np.ndarray], what: str = "robot poses") -> dict:
    """Raise DegenerateMotionError for pure translations or rotations about a single axis; else stats."""
    Ts = list(T_base_gripper)
    angles, axes = [], []
    for i, j in combinations(range(len(Ts)), 2):
        D = inv_T(Ts[i]) @ Ts[j]
        a = rotation_angle_deg(D[:3, :3])
        angles.append(a)
        if a >= MIN_ROTATION_DEG:
            axes.append(rotation_axis(D[:3, :3]))
    max_angle = max(angles) if angles else 0.0
    if len(axes) < 2:
        raise DegenerateMotionError(
            f"the {what} differ by pure translations (largest relative rotation {max_angle:.1f} deg < "
            f"{MIN_ROTATION_DEG} deg): hand-eye needs the gripper rotated between views; capture views with the "
            "wrist rotated 15-45 deg about at least two different axes"
        )
    A = np.array(axes)
    cos = np.abs(A @ A.T)
    spread = float(np.degrees(np.arccos(np.clip(cos.min(), 0.0, 1.0))))
    if spread < MIN_AXIS_SPREAD_DEG:
        raise DegenerateMotionError(
            f"all {what} rotate about one axis (axes within {spread:.1f} deg): the camera offset along that axis is "
            "unobservable; also rotate the wrist about a second, different axis between views"
        )
    return {"max_relative_rotation_deg": round(max_angle, 2), "axis_spread_deg": round(spread, 2)}


def _solve(cv2, method: str, mode: str, Tg: list[np.ndarray], Tc: list[np.ndarray]) -> np.ndarray:
    """One OpenCV solver -> X (T_gripper_camera or T_base_camera)."""
    # eye-to-hand is eye-in-hand with the roles of base and gripper swapped: feed T_gripper_base instead
    A = Tg if mode == "eye-in-hand" else [inv_T(T) for T in Tg]  # "gripper2base" in OpenCV's terms
    if method in HANDEYE_METHODS:
        R, t = cv2.calibrateHandEye(
            [T[:3, :3] for T in A], [T[:3, 3] for T in A], [T[:3, :3] for T in Tc], [T[:3, 3] for T in Tc],
            method=getattr(cv2, f"CALIB_HAND_EYE_{method}"),
        )
        return make_T(R, t)
    B = [inv_T(T) for T in A]  # "base2gripper"
    _, _, R, t = cv2.calibrateRobotWorldHandEye(
        [T[:3, :3] for T in Tc], [T[:3, 3] for T in Tc], [T[:3, :3] for T in B], [T[:3, 3] for T in B],
        method=getattr(cv2, f"CALIB_ROBOT_WORLD_HAND_EYE_{method}"),
    )
    return inv_T(make_T(R, t))  # it returns gripper2cam


def view_residuals(X: np.ndarray, mode: str, Tg, Tc, probe: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T_fixed_board mean, rotation deg per view, translation mm per view over the `probe` board points)."""
    if mode == "eye-in-hand":
        F = [g @ X @ c for g, c in zip(Tg, Tc)]  # T_base_board
    else:
        F = [inv_T(g) @ X @ c for g, c in zip(Tg, Tc)]  # T_gripper_board
    M = average_transforms(F)
    P = np.c_[probe, np.ones(len(probe))].T
    rot = np.array([rotation_angle_deg(M[:3, :3].T @ f[:3, :3]) for f in F])
    trans = np.array([np.sqrt(np.mean(np.sum(((f @ P) - (M @ P))[:3] ** 2, axis=0))) * 1000.0 for f in F])
    return M, rot, trans


def solve_handeye(
    T_base_gripper: dict[str, np.ndarray],
    T_cam_board: dict[str, np.ndarray],
    mode: str,
    spec: BoardSpec,
    *,
    methods=HANDEYE_METHODS + ROBOT_WORLD_METHODS,
    min_views: int = MIN_VIEWS,
    reject_outliers: bool = True,
    source: str = "",
) -> HandEyeResult:
    """Run every solver, keep the one whose implied board poses agree best; drop outlier views and re-solve."""
    cv2 = require_cv2()
    if mode not in MODES:
        raise InputFileError(f"--mode must be eye-in-hand or eye-to-hand, got {mode!r}")
    names = [n for n in T_cam_board if n in T_base_gripper]
    where = f" in {source}" if source else ""
    if len(names) < min_views:
        raise InsufficientViewsError(
            f"only {len(names)} views{where} have both a detected board and a robot pose (need >= {min_views}, "
            "10-20 recommended): capture more views, and check the poses file names match the image files"
        )
    probe = spec.corners_3d()
    outliers: dict[str, str] = {}
    for _round in range(2):
        Tg = [T_base_gripper[n] for n in names]
        Tc = [T_cam_board[n] for n in names]
        motion = check_motion(Tg)
        check_motion(Tc, "board poses seen by the camera")
        results = {}
        for m in methods:
            try:
                X = _solve(cv2, m, mode, Tg, Tc)
            except cv2.error as exc:  # a solver can fail on near-degenerate data; the others still count
                log.info("hand-eye method %s failed: %s", m, exc)
                continue
            if not np.all(np.isfinite(X)):
                continue
            M, rot, trans = view_residuals(X, mode, Tg, Tc, probe)
            score = float(np.sqrt(np.mean(trans**2)))
            results[m] = {"X": X, "M": M, "rot": rot, "trans": trans, "score": score}
        if not results:
            raise DegenerateMotionError(f"every hand-eye solver failed{where}: capture more varied views")
        best = min(results, key=lambda m: results[m]["score"])
        r = results[best]
        med_t, med_r = float(np.median(r["trans"])), float(np.median(r["rot"]))
        lim_t, lim_r = max(3.0 * med_t, 2.0), max(3.0 * med_r, 0.5)
        bad = [
            i for i in range(len(names))
            if r["trans"][i] > lim_t or r["rot"][i] > lim_r
        ]
        if not reject_outliers or not bad or len(names) - len(bad) < min_views or _round == 1:
            break
        for i in bad:
            outliers[names[i]] = f"{r['trans'][i]:.2f} mm / {r['rot'][i]:.3f} deg (limits {lim_t:.2f} mm / {lim_r:.3f} deg)"
            log.info("hand-eye: view %s is an outlier (%s)", names[i], outliers[names[i]])
        names = [n for i, n in enumerate(names) if i not in set(bad)]
    if med_t > MAX_MEDIAN_MM or med_r > MAX_MEDIAN_DEG:
        raise InconsistentDataError(
            f"no hand-eye solution fits the data{where} (best {best}: median residual {med_t:.1f} mm, "
            f"{med_r:.2f} deg): check --mode (eye-in-hand = camera on the gripper), that poses are T_base_gripper "
            "(gripper in base, not inverted) in metres, and that each pose belongs to its image"
        )
    key_T = [results[m]["X"] for m in results]
    spread_t = max(np.linalg.norm(T[:3, 3] - r["X"][:3, 3]) * 1000.0 for T in key_T)
    spread_r = max(rotation_angle_deg(T[:3, :3].T @ r["X"][:3, :3]) for T in key_T)
    residuals = {
        "rms_mm": round(float(np.sqrt(np.mean(r["trans"] ** 2))), 4),
        "max_mm": round(float(r["trans"].max()), 4),
        "rms_deg": round(float(np.sqrt(np.mean(r["rot"] ** 2))), 5),
        "max_deg": round(float(r["rot"].max()), 5),
        "n_views": len(names),
        "methods_spread_mm": round(float(spread_t), 4),
        "methods_spread_deg": round(float(spread_r), 5),
        **motion,
    }
    methods_report = {
        m: {"rms_mm": round(v["score"], 4), "rms_deg": round(float(np.sqrt(np.mean(v["rot"] ** 2))), 5)}
        for m, v in results.items()
    }
    per_view = {
        n: {"mm": round(float(t), 4), "deg": round(float(a), 5)} for n, t, a in zip(names, r["trans"], r["rot"])
    }
    return HandEyeResult(mode, r["X"], best, r["M"], residuals, per_view, methods_report, outliers, names)
