"""The environment interface: a simulated scene that a run drives instead of the real world, declared by the run
config and called through this interface, never sniffed. The toy task (edge/task/camera.py, `TaskCamera`) is one:
a camera of kind `task` in the config declares it. A real setup (RealSense cameras, a real arm) has none.

An environment is told every joint state the control loop reads (`observe_state`: the loop's state hook), starts an
episode for the run's instruction with the arm where it is (`start_for_instruction`), renders what its camera sees
(`camera`: a drivers.camera Camera that fills the config's canvas slot) and reports the episode (`status`, the run
summary's `task`). `check_environment` refuses, at start and by name, an object that lacks one of these."""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigError

MEMBERS = ("camera", "observe_state", "start_for_instruction", "status")


@runtime_checkable
class Environment(Protocol):
    @property
    def camera(self) -> Any:
        """The camera that renders the scene (connect / read / read_latest / disconnect)."""

    def observe_state(self, q: np.ndarray) -> None:
        """The arm's latest joint positions [J] in robot units (after every state read of the control loop)."""

    def start_for_instruction(self, instruction: str, q: np.ndarray) -> Any:
        """Start an episode for `instruction` with the arm at `q`; ConfigError for an instruction it cannot do."""

    def status(self) -> dict:
        """The episode so far (JSON-able: at least `instruction` and `success`)."""


def check_environment(obj: Any, where: str) -> Environment:
    """`obj` if it has every member of Environment; otherwise ConfigError naming `where` (the config entry that
    declared it) and what it lacks."""
    missing = [m for m in MEMBERS if not (hasattr(obj, m) if m == "camera" else callable(getattr(obj, m, None)))]
    if missing:
        raise ConfigError(f"{where}: {type(obj).__name__} is declared as the run's environment but lacks "
                          f"{', '.join(missing)}; an environment implements edge.task.environment.Environment "
                          f"({', '.join(MEMBERS)}). Add the missing member(s), or use a camera kind that is no "
                          "environment (realsense, sim)")
    return obj
