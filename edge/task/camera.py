"""The task camera: renders the toy scene (edge/task/world.py) from the arm's latest joint state, behind the drivers'
`Camera` interface (capture thread, `read` / `read_latest`, `Frame`), and tracks the episode's success. It is the
toy task's environment (edge/task/environment.py): a run whose config has a camera of kind `task` drives it.

The control loop hands it every joint state it reads (`observe_state`, the loop's state hook); each frame is rendered
with the end effector where the arm is, then the success tracker checks it. `done` (a threading.Event) is set once
the episode succeeded, so an evaluation can stop the loop there."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from drivers.camera.base import Camera, Frame
from drivers.camera.pacing import FramePacer

from ..errors import ConfigError
from ..strict import StrictConfig
from .environment import Environment
from .world import TASK, Episode, SuccessTracker, TaskConfig, end_effector, goal_of, make_episode, render

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskCameraConfig(StrictConfig):
    width: int = 64
    height: int = 64
    fps: float = 30.0
    seed: int = 0  # episode seed of the scene (block positions)
    serial: str = "task-0"
    stall_timeout_s: float = 1.0

    def __post_init__(self):
        for name in ("width", "height"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 16 <= v <= 4096:
                raise ConfigError(f"task camera: {name} must be an integer in [16, 4096], got {v!r}")
        if not (isinstance(self.fps, (int, float)) and 0 < self.fps <= 240):
            raise ConfigError(f"task camera: fps must be in (0, 240], got {self.fps!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"task camera: seed must be an integer, got {self.seed!r}")



class TaskCamera(Camera, Environment):
    """Real-time camera of the toy task and its environment (the camera renders itself). `set_episode` starts an
    episode; `status()` reports it."""

    def __init__(self, config: TaskCameraConfig = TaskCameraConfig(), task: TaskConfig = TASK):
        super().__init__(stall_timeout_s=config.stall_timeout_s)
        self.config, self.task, self.serial = config, task, config.serial
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._q: Optional[np.ndarray] = None
        self._episode: Optional[Episode] = None
        self._tracker: Optional[SuccessTracker] = None
        self._t_start = 0.0
        self._t_success: Optional[float] = None
        self._n = 0
        self._pacer = FramePacer(self.config.fps)

    # --- episode ------------------------------------------------------------------------------------------------
    def set_episode(self, episode: Episode) -> None:
        """Start `episode` now (the tracker resets, `done` clears)."""
        with self._lock:
            self._episode = episode
            self._tracker = SuccessTracker(episode, self.task.hold_count(self.config.fps), self.task)
            self._t_start, self._t_success = time.monotonic(), None
            self.done.clear()

    def start_for_instruction(self, instruction: str, q: np.ndarray) -> Episode:
        """The embedded default: the scene of `config.seed`, the goal the instruction names, the arm where it is."""
        ep = make_episode(self.config.seed, self.task, goal=goal_of(instruction), start=end_effector(q))
        self.observe_state(q)
        self.set_episode(ep)
        return ep

    @property
    def camera(self) -> "TaskCamera":
        """The camera that renders the scene: this one."""
        return self

    @property
    def episode(self) -> Optional[Episode]:
        return self._episode

    def observe_state(self, q) -> None:
        """The arm's latest joint positions (called by the control loop after every state read)."""
        q = np.asarray(q, dtype=np.float64)
        with self._lock:
            self._q = q.copy()

    def status(self) -> dict:
        with self._lock:
            tr, ep = self._tracker, self._episode
            if tr is None or ep is None:
                return {"episode": None}
            t_end = self._t_success if self._t_success is not None else time.monotonic()
            return {"seed": ep.seed, "instruction": ep.instruction, "success": tr.success,
                    "seconds": round(t_end - self._t_start, 3), "frames": tr.checks,
                    "distance": round(tr.distance, 4) if tr.distance == tr.distance else None,
                    "success_radius": self.task.success_radius, "hold_s": self.task.success_hold_s}

    # --- Camera hooks -------------------------------------------------------------------------------------------
    def _open(self) -> None:
        self._n = 0
        self._pacer.start()

    def _grab(self, timeout_s: float) -> Optional[Frame]:
        if self._pacer.wait(timeout_s) is None:
            return None
        with self._lock:
            q, ep = self._q, self._episode
        if q is None or ep is None:
            return None  # nothing to show before an episode and a first state
        ee = end_effector(q)
        color = render(ep, ee, self.config.width, self.config.height, self.task)
        t = time.monotonic()
        with self._lock:
            if self._tracker is not None and self._episode is ep:
                if self._tracker.update(ee) and self._t_success is None:
                    self._t_success = t
                    self.done.set()
        frame = Frame(color=color, depth=None, timestamp=t, frame_number=self._n, serial=self.serial,
                      device_timestamp_ms=1000.0 * self._n / self.config.fps)
        self._n += 1
        return frame

    def _close(self) -> None:
        pass
