"""`calibrate verify`: re-project on new views and say whether a calibration still holds."""
from __future__ import annotations

import logging

import numpy as np

from calib.board import BoardSpec, Detection, usable_reason
from calib.errors import InsufficientViewsError, require_cv2
from calib.geometry import average_transforms, inv_T, make_T, rotation_angle_deg
from calib.store import HandEye, Intrinsics

log = logging.getLogger(__name__)

MAX_RMS_PX = 1.0  # median per-view reprojection RMS with the stored intrinsics fixed
MAX_DRIFT_PX = 1.0  # mean displacement between the stored lens model and a fresh fit on the new views
# hand-eye limits: max(these, 3x the residuals recorded at calibration time) - a robot with sloppy kinematics
# had large residuals from the start and is judged against them
MAX_HANDEYE_MM = 2.0
MAX_HANDEYE_DEG = 0.3
MIN_VERIFY_VIEWS = 3


def _pnp(cv2, d: Detection, spec: BoardSpec, K, dist):
    obj = d.object_points(spec).astype(np.float64)
    img = d.corners.astype(np.float64)
    ok, rvec, tvec = cv2.solvePnP(obj, img, K, dist, flags=cv2.SOLVEPNP_IPPE)
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, K, dist, rvec, tvec)
    proj, _ = cv2.projectPoints(obj, rvec, tvec, K, dist)
    rms = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - img) ** 2, axis=1))))
    return make_T(cv2.Rodrigues(rvec)[0], tvec), rms


def verify_intrinsics(
    detections: dict[str, Detection],
    spec: BoardSpec,
    intr: Intrinsics,
    max_rms_px: float = MAX_RMS_PX,
    max_drift_px: float = MAX_DRIFT_PX,
) -> dict:
    """Two checks on new views: (1) fit only the board pose per view with the stored intrinsics fixed - large
    residuals mean the lens model no longer matches (focus changed, wrong camera or resolution, a bad
    calibration); (2) with >= 6 good views, calibrate afresh and measure how far the two lens models map the same
    rays apart (PnP alone absorbs much of a wrong focal length or principal point into the board pose)."""
    cv2 = require_cv2()
    per_view, poses = {}, {}
    for name, d in detections.items():
        if usable_reason(d, spec) is None:
            T, rms = _pnp(cv2, d, spec, intr.K, intr.dist_array)
            per_view[name], poses[name] = round(rms, 4), T
    if len(per_view) < MIN_VERIFY_VIEWS:
        raise InsufficientViewsError(
            f"only {len(per_view)} new views show the board (need >= {MIN_VERIFY_VIEWS} to verify): capture more"
        )
    med = float(np.median(list(per_view.values())))
    bad = sorted(n for n, e in per_view.items() if e > max_rms_px)
    holds = med <= max_rms_px and len(bad) <= len(per_view) // 4
    drift = None
    if len(per_view) >= 6:
        from calib.errors import CalibrationError
        from calib.intrinsics import calibrate_intrinsics, model_displacement_px

        try:
            fresh = calibrate_intrinsics({n: detections[n] for n in per_view}, intr.size, spec).intrinsics
        except CalibrationError as exc:  # e.g. all new views fronto-parallel: only check (1)
            log.info("verify: no fresh fit on the new views (%s)", exc)
        else:
            mx, mean = model_displacement_px(intr.K, intr.dist_array, fresh.K, fresh.dist_array, intr.size)
            drift = {"mean_px": round(mean, 3), "max_px": round(mx, 3), "threshold_px": max_drift_px,
                     "fresh_fx": round(fresh.fx, 2), "fresh_cx": round(fresh.cx, 2), "fresh_cy": round(fresh.cy, 2)}
            holds = holds and mean <= max_drift_px
    return {
        "holds": bool(holds),
        "model_drift": drift,
        "median_rms_px": round(med, 4),
        "max_rms_px": round(max(per_view.values()), 4),
        "threshold_px": max_rms_px,
        "views_over_threshold": bad,
        "per_view_rms_px": per_view,
        "_poses": poses,
    }


def verify_handeye(
    detections: dict[str, Detection],
    T_base_gripper: dict[str, np.ndarray],
    spec: BoardSpec,
    intr: Intrinsics,
    he: HandEye,
    max_mm: float | None = None,
    max_deg: float | None = None,
    max_rms_px: float = MAX_RMS_PX,
    max_drift_px: float = MAX_DRIFT_PX,
) -> dict:
    """With the stored transform, predict where the board should appear in each new view from the robot pose
    (board pose taken as the consensus of the views) and compare: px, mm, deg."""
    cv2 = require_cv2()
    if max_mm is None:
        max_mm = max(MAX_HANDEYE_MM, 3.0 * float(he.residuals.get("rms_mm", 0.0)))
    if max_deg is None:
        max_deg = max(MAX_HANDEYE_DEG, 3.0 * float(he.residuals.get("rms_deg", 0.0)))
    intr_report = verify_intrinsics(detections, spec, intr, max_rms_px, max_drift_px)
    poses = intr_report.pop("_poses")
    names = [n for n in poses if n in T_base_gripper]
    if len(names) < MIN_VERIFY_VIEWS:
        raise InsufficientViewsError(
            f"only {len(names)} new views have both a detected board and a robot pose (need >= {MIN_VERIFY_VIEWS}); "
            "check the poses file names match the images"
        )
    X = he.T
    if he.mode == "eye-in-hand":
        F = {n: T_base_gripper[n] @ X @ poses[n] for n in names}  # T_base_board
        predict = lambda n, M: inv_T(T_base_gripper[n] @ X) @ M  # noqa: E731  T_cam_board
    else:
        F = {n: inv_T(T_base_gripper[n]) @ X @ poses[n] for n in names}  # T_gripper_board
        predict = lambda n, M: inv_T(X) @ T_base_gripper[n] @ M  # noqa: E731
    M = average_transforms(list(F.values()))
    P = spec.corners_3d()
    per_view = {}
    for n in names:
        Tp = predict(n, M)
        rvec, _ = cv2.Rodrigues(Tp[:3, :3])
        d = detections[n]
        proj, _ = cv2.projectPoints(d.object_points(spec), rvec, Tp[:3, 3], intr.K, intr.dist_array)
        px = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - d.corners) ** 2, axis=1))))
        Ph = np.c_[P, np.ones(len(P))].T
        mm = float(np.sqrt(np.mean(np.sum(((F[n] @ Ph) - (M @ Ph))[:3] ** 2, axis=0))) * 1000.0)
        deg = rotation_angle_deg(M[:3, :3].T @ F[n][:3, :3])
        per_view[n] = {"px": round(px, 3), "mm": round(mm, 3), "deg": round(deg, 4)}
    med_mm = float(np.median([v["mm"] for v in per_view.values()]))
    med_deg = float(np.median([v["deg"] for v in per_view.values()]))
    med_px = float(np.median([v["px"] for v in per_view.values()]))
    holds = intr_report["holds"] and med_mm <= max_mm and med_deg <= max_deg
    return {
        "holds": bool(holds),
        "intrinsics": intr_report,
        "handeye": {
            "median_mm": round(med_mm, 3), "median_deg": round(med_deg, 4), "median_reprojection_px": round(med_px, 3),
            "threshold_mm": max_mm, "threshold_deg": max_deg, "per_view": per_view,
        },
    }
