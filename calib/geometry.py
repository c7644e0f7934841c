"""Rigid-transform helpers (pure numpy). Convention: T_a_b (4x4) maps points in frame b to frame a, metres."""
from __future__ import annotations

import math

import numpy as np


def make_T(R: np.ndarray, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = np.asarray(R, dtype=float).reshape(3, 3)
    T[:3, 3] = np.asarray(t, dtype=float).reshape(3)
    return T


def inv_T(T: np.ndarray) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    return make_T(R.T, -R.T @ t)


def rodrigues(rvec) -> np.ndarray:
    """Axis-angle (3,) -> rotation matrix, without OpenCV."""
    r = np.asarray(rvec, dtype=float).reshape(3)
    theta = float(np.linalg.norm(r))
    if theta < 1e-12:
        return np.eye(3)
    k = r / theta
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(theta) * Kx + (1 - math.cos(theta)) * Kx @ Kx


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle of a rotation matrix in degrees (0..180)."""
    c = (np.trace(np.asarray(R)[:3, :3]) - 1.0) / 2.0
    return math.degrees(math.acos(min(1.0, max(-1.0, c))))


def rotation_axis(R: np.ndarray) -> np.ndarray:
    """Unit rotation axis (undefined for ~0 rotation; returns zeros then)."""
    R = np.asarray(R)[:3, :3]
    v = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    n = np.linalg.norm(v)
    if n < 1e-9:
        # angle ~0 or ~180 deg: take the eigenvector of eigenvalue 1
        w, V = np.linalg.eigh((R + R.T) / 2.0)
        if rotation_angle_deg(R) < 1e-6:
            return np.zeros(3)
        return V[:, int(np.argmax(w))]
    return v / n


def transform_delta(A: np.ndarray, B: np.ndarray) -> tuple[float, float]:
    """(rotation deg, translation mm) between two 4x4 transforms."""
    D = inv_T(A) @ B
    return rotation_angle_deg(D[:3, :3]), float(np.linalg.norm(A[:3, 3] - B[:3, 3]) * 1000.0)


def project_to_so3(M: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(M)
    R = U @ Vt
    if np.linalg.det(R) < 0:
        U[:, -1] *= -1
        R = U @ Vt
    return R


def average_transforms(Ts, weights=None) -> np.ndarray:
    """Chordal L2 mean of rotations and mean of translations."""
    Ts = np.asarray(Ts, dtype=float)
    w = np.ones(len(Ts)) if weights is None else np.asarray(weights, dtype=float)
    w = w / w.sum()
    R = project_to_so3(np.einsum("i,ijk->jk", w, Ts[:, :3, :3]))
    t = np.einsum("i,ij->j", w, Ts[:, :3, 3])
    return make_T(R, t)


def is_rigid(T: np.ndarray, tol: float = 1e-4) -> bool:
    T = np.asarray(T, dtype=float)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        return False
    R = T[:3, :3]
    return (
        np.allclose(R @ R.T, np.eye(3), atol=tol)
        and abs(np.linalg.det(R) - 1.0) < tol
        and np.allclose(T[3], [0, 0, 0, 1], atol=tol)
    )


def look_at(eye, target, up=(0.0, -1.0, 0.0)) -> np.ndarray:
    """T_world_cam of an OpenCV camera (z forward, y down) at `eye` looking at `target`."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(np.asarray(up, float), z)
    if np.linalg.norm(x) < 1e-6:
        x = np.cross([1.0, 0.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return make_T(np.stack([x, y, z], axis=1), eye)


def T_to_list(T: np.ndarray, ndigits: int = 9) -> list[list[float]]:
    return [[round(float(v), ndigits) for v in row] for row in np.asarray(T)]


def T_from_list(value, what: str) -> np.ndarray:
    """4x4 row-major nested list (or flat 16) -> array; ValueError naming `what` when malformed or not rigid."""
    try:
        T = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not a 4x4 list of numbers ({exc})") from exc
    if T.size == 16:
        T = T.reshape(4, 4)
    if T.shape != (4, 4):
        raise ValueError(f"{what} has shape {T.shape}, expected a 4x4 row-major list")
    if not is_rigid(T, tol=1e-3):
        raise ValueError(
            f"{what} is not a rigid transform (rotation not orthonormal, NaN, or last row not [0,0,0,1]); "
            "give a 4x4 row-major homogeneous matrix in metres"
        )
    return T
