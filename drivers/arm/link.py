"""The arm link interface and its lifecycle, shared by one controller on one serial port (drivers.arm.base) and
several stepped together (drivers.arm.multi.MultiArm).

Lifecycle (enforced; each refusal is a typed error that says what to call first):

    DISCONNECTED --connect()--> CONNECTED --torque(True)--> ACTIVE
         ^                          |  ^                       |
         +------disconnect()--------+  +--torque(False), estop()

- DISCONNECTED: nothing but `connect()` (anything touching the wire raises `NotConnectedError`).
- CONNECTED: the port is open and the controller answered: reading (`read_state`, `read_within`, `ping`) and
  torque / watchdog changes are allowed; commands are refused with `NotActiveError` (torque is off as far as this
  host knows: a goal would not be followed, only wait in the servo's register for the next torque on).
- ACTIVE: torque switched on by this host and confirmed by every servo: commands (`write`, `send_checked`) go out.
  `torque(False)` (confirmed or not: a stop is never undone by a lost reply), `estop()` and `disconnect()` end it;
  a `torque(True)` that some servo did not confirm changes nothing (it switched nothing off). (A framed controller
  latches its own e-stop and refuses commands itself, so the framed link's `estop()` leaves the host state as is.)

Commands are checked in this order, so the most important reason is the one reported: e-stop latch (`EStopError`),
lifecycle (`NotActiveError`), finite values (`SafetyError`), range (`OutOfRangeError`)."""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from drivers.errors import NotActiveError, NotConnectedError


class LinkState(str, enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTED = "connected"  # reading allowed
    ACTIVE = "active"  # torque on: commands allowed


@dataclass(frozen=True, eq=False)
class ArmState:
    """One joint state. It reads as its joint vector `q` where an array is expected (`np.asarray(state)`,
    `state[i]`, `state.shape`, `len(state)`), so code that took the joint vector directly keeps working."""

    q: np.ndarray  # joint units (rad, gripper 0..1), in mapping order
    raw: np.ndarray  # raw controller units
    timestamp: float  # time.monotonic() after the reply arrived (for several links: the oldest)

    def __array__(self, dtype=None, copy=None):
        return np.array(self.q, dtype=dtype, copy=copy) if copy is not None else np.asarray(self.q, dtype=dtype)

    def __getitem__(self, index):
        return self.q[index]

    def __len__(self) -> int:
        return len(self.q)

    def __bool__(self) -> bool:  # a state was read (an array of several joints has no truth value)
        return True

    @property
    def shape(self) -> tuple:
        return self.q.shape

    @classmethod
    def concatenate(cls, states: Sequence["ArmState"]) -> "ArmState":
        """Several links' states as one (link order); stamped with the oldest timestamp."""
        return cls(q=np.concatenate([s.q for s in states]), raw=np.concatenate([s.raw for s in states]),
                   timestamp=min(s.timestamp for s in states))


class ArmLink:
    """The interface every arm link offers (see the module docstring for the lifecycle). Not thread-safe: one
    control thread owns a link. Subclasses implement the abstract methods; `write`, the lifecycle checks and the
    context manager are here."""

    protocol = "base"

    # --- lifecycle --------------------------------------------------------------------------------------------
    @property
    def state(self) -> LinkState:
        raise NotImplementedError

    @property
    def is_connected(self) -> bool:
        return self.state is not LinkState.DISCONNECTED

    @property
    def is_active(self) -> bool:
        return self.state is LinkState.ACTIVE

    @property
    def name(self) -> str:
        """What messages call this link (e.g. "dynamixel link on /dev/ttyUSB0")."""
        return f"{self.protocol} link"

    @property
    def links(self) -> list:
        """The single-port links this link is made of (itself for one port): the bus monitor reads each."""
        return [self]

    def require_connected(self, what: str) -> None:
        if not self.is_connected:
            raise NotConnectedError(f"{self.name} is not connected: {what} needs connect() first",
                                    last_state=self.last_state, last_command=self.last_command)

    def require_active(self, what: str) -> None:
        state = self.state
        if state is not LinkState.ACTIVE:
            raise NotActiveError(f"{self.name} is {state.value}, not active: {what} is refused (torque is off as far "
                                 "as this host knows). Call " + ("connect(), then " if state is LinkState.DISCONNECTED
                                                                 else "") + "torque(True) first: it holds the present "
                                 "position, so nothing jumps.", last_state=self.last_state,
                                 last_command=self.last_command)

    def connect(self) -> "ArmLink":
        raise NotImplementedError

    def disconnect(self, torque_off: Optional[bool] = None) -> None:
        raise NotImplementedError

    def __enter__(self) -> "ArmLink":
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.disconnect()

    # --- reading (connected) ----------------------------------------------------------------------------------
    last_state: Optional[ArmState] = None
    last_command: Optional[np.ndarray] = None

    def read_state(self) -> ArmState:
        raise NotImplementedError

    def read_within(self, deadline: float, clock=time.monotonic) -> tuple:
        """(state, None) once a valid state was read before `deadline`; (None, the last ReplyError or None) when
        the time ran out."""
        raise NotImplementedError

    def ping(self) -> dict:
        raise NotImplementedError

    # --- commanding (active) ----------------------------------------------------------------------------------
    def check_command(self, q: Sequence[float]) -> np.ndarray:
        """The checks before anything moves (e-stop, lifecycle, finite, range); the command as float64."""
        raise NotImplementedError

    def send_checked(self, q: np.ndarray, dt: Optional[float], now: float, reply_budget_s: Optional[float] = None
                     ) -> np.ndarray:
        """Clip and send a command that passed `check_command`; the command actually sent."""
        raise NotImplementedError

    def write(self, q: Sequence[float], dt: Optional[float] = None, reply_budget_s: Optional[float] = None
              ) -> np.ndarray:
        """Send a joint command; returns the command actually sent (clipped, quantised to raw units). `dt`: seconds
        since the previous command, for the velocity limit (default: measured)."""
        return self.send_checked(self.check_command(q), dt, time.monotonic(), reply_budget_s)

    # --- torque, watchdog, e-stop -----------------------------------------------------------------------------
    def torque(self, on: bool) -> dict:
        raise NotImplementedError

    def set_torque_all(self, on: bool) -> dict:
        """Best effort for the stop paths: every servo attempted; never raises."""
        raise NotImplementedError

    def set_watchdog(self, ms: int) -> Optional[dict]:
        raise NotImplementedError

    @property
    def watchdog_ms(self) -> int:
        return 0

    def estop(self, reason: str = "estop() called") -> None:
        raise NotImplementedError

    def clear_estop(self) -> None:
        raise NotImplementedError
