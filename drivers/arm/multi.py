"""Several arm links stepped together (a dual-arm robot, or an arm and a separate gripper controller) as one
`ArmLink`: one joint vector, the links' vectors concatenated in link order.

Same interface and lifecycle as one link (drivers.arm.link): connected when every link is, active when every link
is. Every link checks a command (e-stop, lifecycle, finite, range) before any link sends its part; torque, e-stop
and disconnect reach every link even when one fails (the first failure is raised after all were tried). Reports
that are per servo id on one link ({id: ...}) are per port here ({port: {id: ...}}): ids repeat across buses."""
from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np

from drivers.arm.link import ArmLink, ArmState, LinkState
from drivers.errors import ArmError, ConfigError


class MultiArm(ArmLink):
    protocol = "multi"

    def __init__(self, links: Sequence[ArmLink]):
        flat = [one for link in links or () for one in link.links]  # a MultiArm of MultiArms is flattened
        if not flat:
            raise ConfigError("MultiArm needs at least one link (one per arm controller)")
        ports = [l.config.port for l in flat]
        if len(set(ports)) != len(ports):
            raise ConfigError(f"MultiArm: two links on the same port in {ports}; give each controller its own port")
        self._links = flat
        self.sizes = [l.mapping.n for l in flat]

    @property
    def links(self) -> list:
        return list(self._links)

    @property
    def name(self) -> str:
        return "arm of " + ", ".join(l.name for l in self._links)

    @property
    def state(self) -> LinkState:
        states = [l.state for l in self._links]
        if all(s is LinkState.ACTIVE for s in states):
            return LinkState.ACTIVE
        if any(s is LinkState.DISCONNECTED for s in states):
            return LinkState.DISCONNECTED
        return LinkState.CONNECTED

    def _each(self, fn) -> dict:
        """fn(link) for every link, each attempted; {port: result}; the first ArmError raised after all ran."""
        out, errors = {}, []
        for link in self._links:
            try:
                out[link.config.port] = fn(link)
            except ArmError as exc:
                out[link.config.port] = None
                errors.append(exc)
        if errors:
            raise errors[0]
        return out

    def _split(self, q: Sequence[float], what: str) -> list:
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (sum(self.sizes),):
            raise ConfigError(f"MultiArm.{what} expects {sum(self.sizes)} values ({self.sizes} per link), got "
                              f"shape {q.shape}")
        return np.split(q, np.cumsum(self.sizes)[:-1])

    # --- lifecycle --------------------------------------------------------------------------------------------
    def connect(self) -> "MultiArm":
        """Connect every link in order; a failure disconnects the ones already connected and raises."""
        done = []
        try:
            for link in self._links:
                link.connect()
                done.append(link)
        except BaseException:
            for link in reversed(done):
                link.disconnect()
            raise
        return self

    def disconnect(self, torque_off: Optional[bool] = None) -> None:
        """Every link gets its chance to switch torque off and close; the first failure is raised after."""
        errors = []
        for link in self._links:
            try:
                link.disconnect(torque_off)
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    # --- reading ----------------------------------------------------------------------------------------------
    @property
    def last_state(self) -> Optional[ArmState]:
        states = [l.last_state for l in self._links]
        return None if any(s is None for s in states) else ArmState.concatenate(states)

    @property
    def last_command(self) -> Optional[np.ndarray]:
        cmds = [l.last_command for l in self._links]
        return None if any(c is None for c in cmds) else np.concatenate(cmds)

    def read_state(self) -> ArmState:
        return ArmState.concatenate([l.read_state() for l in self._links])

    def read_within(self, deadline: float, clock=time.monotonic) -> tuple:
        """Each link reads within its share of the time left (plus what the ones before left over); (state, None)
        when every link got a fresh state, else (None, the last ReplyError or None)."""
        t, n, last, ok = clock(), len(self._links), None, True
        for k, link in enumerate(self._links):
            state, err = link.read_within(t + (deadline - t) * (k + 1) / n, clock)
            if state is None:
                ok, last = False, err or last
        return (self.last_state, None) if ok else (None, last)

    def ping(self) -> dict:
        return {link.config.port: link.ping() for link in self._links}

    # --- commanding -------------------------------------------------------------------------------------------
    def check_command(self, q: Sequence[float]) -> np.ndarray:
        """Every link checks its part before any link moves."""
        return np.concatenate([link.check_command(part) for link, part in zip(self._links, self._split(q, "write"))])

    def write(self, q: Sequence[float], dt: Optional[float] = None, reply_budget_s: Optional[float] = None
              ) -> np.ndarray:
        """`check_command` then `send_checked`, with the command split once (the control loop's hot path)."""
        parts = [link.check_command(part) for link, part in zip(self._links, self._split(q, "write"))]
        now = time.monotonic()
        return np.concatenate([link.send_checked(part, dt, now, reply_budget_s)
                               for link, part in zip(self._links, parts)])

    def send_checked(self, q: np.ndarray, dt: Optional[float], now: float, reply_budget_s: Optional[float] = None
                     ) -> np.ndarray:
        """A failure part-way raises; the caller's safe stop applies the configured torque to every link."""
        return np.concatenate([link.send_checked(part, dt, now, reply_budget_s)
                               for link, part in zip(self._links, self._split(q, "send_checked"))])

    # --- torque, watchdog, e-stop -----------------------------------------------------------------------------
    @property
    def torque_report(self) -> dict:
        return {link.config.port: link.torque_report for link in self._links}

    def torque(self, on: bool) -> dict:
        """Every link attempted; raises the first failure after all were tried. {port: {id: state}}."""
        self._each(lambda link: link.torque(on))
        return self.torque_report

    def set_torque_all(self, on: bool) -> dict:
        return {link.config.port: link.set_torque_all(on) for link in self._links}

    def set_watchdog(self, ms: int) -> dict:
        """{port: {id: confirmed} or None where the protocol has no watchdog}."""
        return self._each(lambda link: link.set_watchdog(ms))

    @property
    def watchdog_ms(self) -> int:
        """The shortest armed watchdog of the links (0: none): what the host must beat."""
        armed = [l.watchdog_ms for l in self._links if l.watchdog_ms > 0]
        return min(armed) if armed else 0

    def estop(self, reason: str = "estop() called") -> None:
        for link in self._links:  # each link latches even if another's controller is unreachable
            link.estop(reason)

    def clear_estop(self) -> None:
        self._each(lambda link: link.clear_estop())
