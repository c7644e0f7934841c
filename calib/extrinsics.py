"""Multi-camera extrinsics from shared board views: images with the same file name in each camera's directory
were taken at the same instant. T_ref_cam = T_ref_board @ inv(T_cam_board), averaged over shared views
(outliers dropped); cameras without enough views shared with the reference are chained through others."""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import numpy as np

from calib.errors import InsufficientViewsError
from calib.geometry import average_transforms, inv_T, transform_delta

log = logging.getLogger(__name__)

MIN_SHARED = 3


@dataclass
class PairEstimate:
    T: np.ndarray  # T_a_b
    views: list[str]
    rot_deg: dict[str, float]
    trans_mm: dict[str, float]
    outliers: list[str]


def estimate_pair(poses_a: dict[str, np.ndarray], poses_b: dict[str, np.ndarray]) -> PairEstimate | None:
    """T_a_b from views where both cameras saw the board (None when fewer than MIN_SHARED)."""
    shared = sorted(set(poses_a) & set(poses_b))
    if len(shared) < MIN_SHARED:
        return None
    Ts = {n: poses_a[n] @ inv_T(poses_b[n]) for n in shared}
    outliers: list[str] = []
    for _ in range(2):
        keep = [n for n in shared if n not in outliers]
        M = average_transforms([Ts[n] for n in keep])
        d = {n: transform_delta(M, Ts[n]) for n in keep}
        rot = np.array([d[n][0] for n in keep])
        tr = np.array([d[n][1] for n in keep])
        lim_r, lim_t = max(3 * np.median(rot), 0.3), max(3 * np.median(tr), 3.0)
        bad = [n for n in keep if d[n][0] > lim_r or d[n][1] > lim_t]
        if not bad or len(keep) - len(bad) < MIN_SHARED:
            break
        outliers += bad
    keep = [n for n in shared if n not in outliers]
    M = average_transforms([Ts[n] for n in keep])
    return PairEstimate(
        M, keep,
        {n: round(transform_delta(M, Ts[n])[0], 5) for n in keep},
        {n: round(transform_delta(M, Ts[n])[1], 4) for n in keep},
        outliers,
    )


def solve_extrinsics(board_poses: dict[str, dict[str, np.ndarray]], reference: str) -> tuple[dict[str, np.ndarray], dict]:
    """board_poses[serial][image name] = T_cam_board. Returns ({serial: T_ref_cam}, residual report)."""
    serials = list(board_poses)
    if reference not in board_poses:
        raise InsufficientViewsError(f"reference camera {reference} has no board views; choose another --reference")
    pairs: dict[tuple[str, str], PairEstimate] = {}
    for a in serials:
        for b in serials:
            if a < b:
                est = estimate_pair(board_poses[a], board_poses[b])
                if est is not None:
                    pairs[(a, b)] = est
    # BFS from the reference, preferring direct pairs with more shared views
    T_ref = {reference: np.eye(4)}
    chain = {reference: [reference]}
    queue = deque([reference])
    while queue:
        a = queue.popleft()
        nbrs = []
        for (x, y), est in pairs.items():
            if x == a and y not in T_ref:
                nbrs.append((len(est.views), y, est.T))
            elif y == a and x not in T_ref:
                nbrs.append((len(est.views), x, inv_T(est.T)))
        for _, b, T_ab in sorted(nbrs, key=lambda v: -v[0]):
            if b not in T_ref:
                T_ref[b] = T_ref[a] @ T_ab
                chain[b] = chain[a] + [b]
                queue.append(b)
    missing = [s for s in serials if s not in T_ref]
    if missing:
        counts = {s: len(set(board_poses[s]) & set(board_poses[reference])) for s in missing}
        raise InsufficientViewsError(
            f"camera(s) {missing} share too few board views with the others (with {reference}: {counts}; need >= "
            f"{MIN_SHARED}): capture views where the board is seen by both cameras at once (same file name in each dir)"
        )
    report = {
        "pairs": {
            f"{a}->{b}": {
                "n_views": len(e.views),
                "rms_deg": round(float(np.sqrt(np.mean(np.square(list(e.rot_deg.values()))))), 5),
                "rms_mm": round(float(np.sqrt(np.mean(np.square(list(e.trans_mm.values()))))), 4),
                "max_mm": round(float(max(e.trans_mm.values())), 4),
                "outliers": e.outliers,
            }
            for (a, b), e in pairs.items()
        },
        "chains": {s: c for s, c in chain.items() if len(c) > 2},
    }
    return T_ref, report


def check_extrinsics(board_poses: dict[str, dict[str, np.ndarray]], T_ref_cam: dict[str, np.ndarray], reference: str) -> dict:
    """Per camera: how far T_ref_cam @ T_cam_board lands from T_ref_board on shared views (deg, mm)."""
    out = {}
    for s, poses in board_poses.items():
        if s == reference or s not in T_ref_cam:
            continue
        shared = sorted(set(poses) & set(board_poses.get(reference, {})))
        d = [transform_delta(board_poses[reference][n], T_ref_cam[s] @ poses[n]) for n in shared]
        if d:
            out[s] = {
                "n_views": len(d),
                "median_deg": round(float(np.median([v[0] for v in d])), 4),
                "median_mm": round(float(np.median([v[1] for v in d])), 3),
            }
    return out
