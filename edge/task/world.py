"""The toy reaching task (pure numpy): a planar tabletop seen from above, an end effector driven by the arm's first two
joints and three coloured blocks; the instruction names the block to move to.

Kinematics (a gantry): end effector (x, y) = (q[0], q[1]) in world units (= joint radians); the other joints of the
7-joint simulated arm must stay at 0. The camera sees [-view, view]^2, x to the right and y up.
Episodes are a pure function of a seed: block positions (at least `min_separation` apart and away from the start),
the goal colour and the start pose. The scripted expert is a pure function of (episode, joint state) -> the next H
joint targets (straight line to the goal block at `expert_speed` per action step). Success: the end effector within
`success_radius` of the goal block's centre for `success_hold_s` seconds (checked at every camera frame in closed
loop, at every action step in the kinematic rollout)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..errors import ConfigError

COLORS = {"red": (220, 45, 45), "green": (40, 165, 70), "blue": (45, 90, 230)}
BACKGROUND = (196, 188, 170)
EE_COLOR = (30, 30, 30)
INSTRUCTION = "move to the {color} block"


@dataclass(frozen=True)
class TaskConfig:
    n_joints: int = 7  # the simulated arm of the embedded default; joints 0 and 1 drive x and y
    workspace: float = 0.8  # block centres and start positions in [-workspace, workspace]^2
    view: float = 1.1  # the camera sees [-view, view]^2
    block_half: float = 0.1  # half side of a block
    ee_radius: float = 0.075
    min_separation: float = 0.45  # between block centres, and between the start and every block
    success_radius: float = 0.15
    success_hold_s: float = 0.3
    expert_speed: float = 0.08  # world units per action step (0.8 /s at 10 Hz)
    horizon: int = 16
    action_hz: float = 10.0
    max_seconds: float = 6.0  # episode limit in closed loop

    def __post_init__(self):
        if self.n_joints < 2:
            raise ConfigError(f"task: n_joints must be >= 2 (x and y), got {self.n_joints}")
        if not 0 < self.workspace < self.view:
            raise ConfigError(f"task: workspace {self.workspace} must be in (0, view={self.view})")
        if self.success_radius <= 0 or self.expert_speed <= 0 or self.horizon < 1 or self.max_seconds <= 0:
            raise ConfigError("task: success_radius, expert_speed, horizon and max_seconds must be > 0")

    def hold_count(self, rate_hz: float) -> int:
        """Consecutive checks at `rate_hz` that make `success_hold_s`."""
        return max(1, int(math.ceil(self.success_hold_s * rate_hz - 1e-9)))

    @property
    def max_steps(self) -> int:
        return int(round(self.max_seconds * self.action_hz))


TASK = TaskConfig()


def instructions() -> list[str]:
    """Every instruction of the task (the prompt cache of exported engines holds these)."""
    return [INSTRUCTION.format(color=c) for c in COLORS]


def goal_of(instruction: str) -> str:
    """The colour an instruction names; ConfigError for an instruction the task does not know."""
    for color in COLORS:
        if instruction.strip() == INSTRUCTION.format(color=color):
            return color
    raise ConfigError(f"the toy task does not know the instruction {instruction!r}; use one of {instructions()}")


@dataclass(frozen=True)
class Episode:
    seed: int
    blocks: np.ndarray  # [n_blocks, 2] centres, world units
    colors: tuple  # colour name of each block
    goal: str
    start: np.ndarray  # [2] end-effector start

    @property
    def instruction(self) -> str:
        return INSTRUCTION.format(color=self.goal)

    @property
    def target(self) -> np.ndarray:
        return self.blocks[self.colors.index(self.goal)]

    def start_joints(self, cfg: TaskConfig = TASK) -> np.ndarray:
        q = np.zeros(cfg.n_joints, dtype=np.float64)
        q[:2] = self.start
        return q


def make_episode(seed: int, cfg: TaskConfig = TASK, goal: Optional[str] = None,
                 start: Optional[np.ndarray] = None) -> Episode:
    """Episode `seed` (numpy PCG64): blocks by rejection sampling, goal colour and start uniform. `goal`/`start`
    override the sampled ones (the embedded default: the instruction of its config, the arm where it is)."""
    rng = np.random.default_rng(int(seed))
    names = tuple(COLORS)
    sampled_goal = names[int(rng.integers(len(names)))]
    sampled_start = rng.uniform(-cfg.workspace, cfg.workspace, 2)
    start = sampled_start if start is None else np.asarray(start, dtype=np.float64)[:2]
    for _ in range(10000):
        blocks = rng.uniform(-cfg.workspace, cfg.workspace, (len(names), 2))  # [3, 2]
        d_blocks = np.linalg.norm(blocks[:, None] - blocks[None], axis=-1) + np.eye(len(names)) * 9
        if d_blocks.min() >= cfg.min_separation and np.linalg.norm(blocks - start, axis=1).min() >= cfg.min_separation:
            break
    else:  # only reachable with an over-constrained config
        raise ConfigError(f"task: cannot place {len(names)} blocks {cfg.min_separation} apart in the workspace")
    if goal is not None and goal not in names:
        raise ConfigError(f"task: unknown goal colour {goal!r}; one of {list(names)}")
    return Episode(int(seed), blocks, names, goal or sampled_goal, start)


def end_effector(q: np.ndarray) -> np.ndarray:
    """Joint positions [J] -> end effector (x, y)."""
    return np.asarray(q, dtype=np.float64)[:2].copy()


def render(episode: Episode, ee: np.ndarray, width: int = 64, height: int = 64, cfg: TaskConfig = TASK,
           supersample: int = 4) -> np.ndarray:
    """The scene with the end effector at `ee` -> HxWx3 uint8 (anti-aliased: rendered at `supersample` x and
    averaged, so sub-pixel positions show in the pixel values)."""
    s = int(supersample)
    h, w = height * s, width * s
    # world coordinates of every supersampled pixel centre; the square view is stretched to the image
    xs = (np.arange(w) + 0.5) / w * 2 * cfg.view - cfg.view  # [w]
    ys = cfg.view - (np.arange(h) + 0.5) / h * 2 * cfg.view  # [h], y up
    img = np.empty((h, w, 3), dtype=np.float32)
    img[:] = BACKGROUND
    for (bx, by), name in zip(episode.blocks, episode.colors):
        mx = np.abs(xs - bx) <= cfg.block_half
        my = np.abs(ys - by) <= cfg.block_half
        img[np.outer(my, mx)] = COLORS[name]
    ex, ey = float(ee[0]), float(ee[1])
    disc = (xs[None, :] - ex) ** 2 + (ys[:, None] - ey) ** 2 <= cfg.ee_radius ** 2  # [h, w]
    img[disc] = EE_COLOR
    img = img.reshape(height, s, width, s, 3).mean(axis=(1, 3))  # [H, W, 3]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _toward(p: np.ndarray, goal: np.ndarray, dist: float) -> np.ndarray:
    d = goal - p
    n = float(np.linalg.norm(d))
    return goal.copy() if n <= dist else p + d * (dist / n)


def expert_chunk(episode: Episode, q: np.ndarray, cfg: TaskConfig = TASK) -> np.ndarray:
    """The scripted expert: joint state [J] -> the next H joint targets [H, J] (action i applies i+1 steps ahead):
    x, y straight to the goal block, the other joints straight to 0, each at `expert_speed` per step."""
    q = np.asarray(q, dtype=np.float64)
    out = np.empty((cfg.horizon, q.shape[0]), dtype=np.float64)
    rest = np.zeros(q.shape[0] - 2)
    for i in range(cfg.horizon):
        step = (i + 1) * cfg.expert_speed
        out[i, :2] = _toward(q[:2], episode.target, step)
        out[i, 2:] = _toward(q[2:], rest, step) if rest.size else rest
    return out


class SuccessTracker:
    """Consecutive checks within `success_radius` of the goal; latches success once `hold` checks in a row pass."""

    def __init__(self, episode: Episode, hold: int, cfg: TaskConfig = TASK):
        self.episode, self.hold, self.cfg = episode, int(hold), cfg
        self.run = 0
        self.checks = 0
        self.success_at: Optional[int] = None  # index of the check that completed the hold
        self.distance = float("nan")

    @property
    def success(self) -> bool:
        return self.success_at is not None

    def update(self, ee: np.ndarray) -> bool:
        self.distance = float(np.linalg.norm(np.asarray(ee, dtype=np.float64)[:2] - self.episode.target))
        self.run = self.run + 1 if self.distance <= self.cfg.success_radius else 0
        if self.success_at is None and self.run >= self.hold:
            self.success_at = self.checks
        self.checks += 1
        return self.success


def rollout(chunk_fn: Callable[[np.ndarray, np.ndarray, str], np.ndarray], episode: Episode, cfg: TaskConfig = TASK,
            replan: int = 8, width: int = 64, height: int = 64, noise: float = 0.0,
            rng: Optional[np.random.Generator] = None, stop_on_success: bool = True) -> dict:
    """Kinematic closed loop without real time: the arm reaches every target exactly (plus optional Gaussian
    `noise`), a chunk is computed every `replan` action steps from the rendered image and the joint state.
    `chunk_fn(image, q, instruction) -> [H', J]` targets. Returns {"success", "steps", "distance", "trajectory"
    [(image, q, chunk or None)] per step}."""
    q = episode.start_joints(cfg)
    tracker = SuccessTracker(episode, cfg.hold_count(cfg.action_hz), cfg)
    traj = []
    chunk, k = None, 0
    for step in range(cfg.max_steps):
        image = render(episode, end_effector(q), width, height, cfg)
        fresh = None
        if chunk is None or k >= min(replan, len(chunk)):
            chunk, k = np.asarray(chunk_fn(image, q.copy(), episode.instruction), dtype=np.float64), 0
            fresh = chunk
        traj.append((image, q.copy(), fresh))
        q = chunk[k].copy()
        k += 1
        if noise and rng is not None:
            q = q + rng.normal(0.0, noise, q.shape)
        if tracker.update(end_effector(q)) and stop_on_success:
            break
    return {"success": tracker.success, "steps": len(traj), "distance": tracker.distance, "trajectory": traj}
