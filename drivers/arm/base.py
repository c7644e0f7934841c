"""One arm controller on one serial port: the `ArmLink` interface (drivers.arm.link: `connect / read_state /
read_within / write(q) -> q_sent / torque(on) / disconnect`, context manager, the enforced lifecycle
disconnected -> connected (reading) -> active (torque on: commands)) over a wire protocol.

Subclasses only move raw integers over the wire (`_open`, `_close`, `_ping`, `_read_raw(budget_s)`, `_write_raw`,
`_torque_ids(on) -> {id: confirmed}`, optionally `_watchdog(ms)`); this base converts units through the
`JointMapping`, applies the pure safety checks (and counts what they clipped), keeps the latched e-stop, counts the
bus health (drivers.arm.health), attaches the last state and command to every fault, and reopens the port after a
port failure (a replugged adapter, a restarted simulator). A lost or corrupt reply (`ReplyError`) is transient:
the port stays open, and `read_within(deadline)` retries until the deadline."""
from __future__ import annotations

import collections
import logging
import os
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from drivers.arm.health import BusHealth
from drivers.arm.link import ArmLink, ArmState, LinkState
from drivers.arm.mapping import JointMapping
from drivers.arm.multi import MultiArm  # noqa: F401  (re-exported: every link kind from one module)
from drivers.arm.safety import EStopLatch, SafetyLimits, beyond_limits, check_finite, clip_command
from drivers.errors import ArmError, ArmLinkError, ConfigError, OutOfRangeError, ProtocolError, ReplyError
from edge.strict import StrictConfig, setting

log = logging.getLogger(__name__)

BAUDRATES = (9600, 57600, 115200, 230400, 460800, 500000, 576000, 921600, 1000000, 2000000, 3000000, 4000000)


@dataclass(frozen=True)
class LinkConfig(StrictConfig):
    port: str = setting(example="/dev/ttyUSB0")
    ids: tuple = (1,)
    baudrate: int = 1_000_000
    timeout_s: float = 0.05  # longest reply wait of one transaction outside the loop (in the loop: the tick's time left)
    connect_timeout_s: float = 2.0  # connect() retries opening + pinging this long (a controller still booting)
    torque_off_on_disconnect: bool = True
    low_latency: bool = True  # set the FTDI latency timer to 1 ms when the port is a USB-serial adapter

    def __post_init__(self):
        name = type(self).__name__
        if not isinstance(self.port, str) or not self.port:
            raise ConfigError(f"{name}.port must be a device path such as /dev/ttyUSB0, got {self.port!r}")
        ids = tuple(self.ids) if isinstance(self.ids, (list, tuple)) else None
        if not ids or not all(isinstance(i, int) and 0 <= i <= 252 for i in ids) or len(set(ids)) != len(ids):
            raise ConfigError(f"{name}.ids must be a non-empty list of distinct integers 0..252, got {self.ids!r}")
        object.__setattr__(self, "ids", ids)
        if self.baudrate not in BAUDRATES:
            raise ConfigError(f"{name}.baudrate {self.baudrate!r} is not supported; use one of {BAUDRATES}")
        if not (isinstance(self.timeout_s, (int, float)) and 0 < self.timeout_s <= 5):
            raise ConfigError(f"{name}.timeout_s must be in (0, 5] seconds, got {self.timeout_s!r}")
        if not (isinstance(self.connect_timeout_s, (int, float)) and 0 <= self.connect_timeout_s <= 60):
            raise ConfigError(f"{name}.connect_timeout_s must be in [0, 60] seconds, got {self.connect_timeout_s!r}")


def set_low_latency(port: str) -> bool:
    """FTDI adapters buffer 16 ms by default; set the latency timer to 1 ms through sysfs when possible."""
    dev = os.path.basename(os.path.realpath(port))
    path = f"/sys/bus/usb-serial/devices/{dev}/latency_timer"
    if not os.path.exists(path):
        return False
    try:
        with open(path) as f:
            if f.read().strip() == "1":
                return True
        with open(path, "w") as f:
            f.write("1")
        return True
    except OSError as exc:
        log.warning("%s: cannot set the USB latency timer to 1 ms (%s); reads may take 16 ms. Fix: "
                    "`echo 1 | sudo tee %s` or a udev rule", port, exc, path)
        return False


READ_ATTEMPTS = 10  # read_state() outside the loop: transactions tried before a ReplyError is raised
RETRY_SPLIT_S = 0.002  # read_within gives a first attempt half the time left when that half is at least this long
CLIP_LOG_EVERY_S = 1.0  # clipping is logged at WARNING at most this often per link (with the count since)


class SerialLink(ArmLink):
    """Base class of the single-port links; see the module docstring. Not thread-safe: one control thread owns a
    link."""

    protocol = "base"

    def __init__(self, config: LinkConfig, mapping: Optional[JointMapping] = None,
                 limits: Optional[SafetyLimits] = None):
        self.config = config
        self.mapping = mapping or JointMapping.default(config.ids)
        if self.mapping.ids != list(config.ids):
            raise ConfigError(f"{self.protocol} link on {config.port}: mapping ids {self.mapping.ids} != config ids "
                              f"{list(config.ids)}; list the same ids in the same order")
        lo, hi = self.mapping.limits_in_units()
        self.limits = limits or SafetyLimits.create(self.mapping.n, lower=lo, upper=hi)
        if self.limits.n != self.mapping.n:
            raise ConfigError(f"safety limits for {self.limits.n} joints, mapping has {self.mapping.n}")
        self.estop_latch = EStopLatch()
        self.health = BusHealth()
        self._read_times = collections.deque(maxlen=50)  # durations of the recent successful reads (s)
        self.clipped = {"commands": 0, "position": 0, "step": 0}  # commands changed by the safety clip, and why
        self.torque_report: dict = {}  # the last torque change: {id: "on"|"off"|"unconfirmed (...)"}
        self.last_state: Optional[ArmState] = None
        self.last_command: Optional[np.ndarray] = None
        self._last_write_t: Optional[float] = None
        self._clip_logged_t = -1e9
        self._clip_unlogged = 0
        self._lifecycle = LinkState.DISCONNECTED
        self._broken = False

    @classmethod
    def default_mapping(cls, ids) -> JointMapping:
        """The joint mapping used without a calibration file (servos: 4096 counts per turn, 2048 at q = 0)."""
        return JointMapping.default(ids)

    # --- wire-level hooks -------------------------------------------------------------------------------------
    def _open(self) -> None: raise NotImplementedError
    def _close(self) -> None: raise NotImplementedError
    def _ping(self, id_: int) -> Optional[int]: raise NotImplementedError  # model number or None
    def _read_raw(self, budget_s: float) -> np.ndarray: raise NotImplementedError  # ReplyError on a bad reply
    def _write_raw(self, raw: np.ndarray, budget_s: float) -> Optional[np.ndarray]:  # raw state if the reply has one
        raise NotImplementedError
    def _torque_ids(self, on: bool) -> dict: raise NotImplementedError  # {id: confirmed}; every id attempted

    def _watchdog(self, ms: int) -> Optional[dict]:
        """Arm (ms > 0) or clear (0) a controller-side watchdog; None: this protocol has none."""
        return None

    # --- lifecycle --------------------------------------------------------------------------------------------
    @property
    def state(self) -> LinkState:
        return self._lifecycle

    @property
    def name(self) -> str:
        return f"{self.protocol} link on {self.config.port}"

    def connect(self, check_ids: bool = True) -> "SerialLink":
        """Open the port, ping every id and read the state: the link is then connected (reading allowed; commands
        wait for torque(True)). A controller that does not answer yet (powering up, a simulator process still
        starting) is retried for `connect_timeout_s`; a missing port is not."""
        if self.is_connected:
            return self
        if self.config.low_latency:
            set_low_latency(self.config.port)
        deadline = time.monotonic() + self.config.connect_timeout_s
        attempt = 0
        while True:
            attempt += 1
            try:
                self._connect_once(check_ids)
                return self
            except ArmLinkError as exc:
                self.disconnect(torque_off=False)
                if (not os.path.exists(self.config.port) or isinstance(exc, ProtocolError)
                        or time.monotonic() >= deadline):
                    raise
                log.info("%s link on %s: connect attempt %d failed (%s); retrying", self.protocol,
                         self.config.port, attempt, exc)
                time.sleep(0.05)
            except BaseException:
                self.disconnect(torque_off=False)
                raise

    def _connect_once(self, check_ids: bool) -> None:
        self._open()
        self._lifecycle, self._broken = LinkState.CONNECTED, False
        if check_ids:
            missing = [i for i in self.config.ids if self._ping(i) is None]
            if missing:
                raise ArmLinkError(f"{self.protocol} link on {self.config.port}: no answer from id(s) {missing} "
                                   f"of {list(self.config.ids)} at {self.config.baudrate} baud within "
                                   f"{self.config.connect_timeout_s:g} s. Check power, wiring, ids and baud rate "
                                   "(`imagewam-edge arm check`).")
            self.read_state()
        else:  # the bus is not verified: a first read that fails is only logged
            try:
                self.read_state()
            except ReplyError as exc:
                log.warning("%s link on %s: no first state (%s)", self.protocol, self.config.port, exc)

    def disconnect(self, torque_off: Optional[bool] = None) -> None:
        """Torque off (by default; every id attempted, the port reopened once if it had failed) and close; never
        raises for a link that is already gone. The link is then disconnected."""
        if not self.is_connected:
            return
        torque_off = self.config.torque_off_on_disconnect if torque_off is None else torque_off
        try:
            if torque_off:
                self.set_torque_all(False)
        finally:
            self._lifecycle = LinkState.DISCONNECTED
            try:
                self._close()
            except Exception as exc:
                log.warning("%s link on %s: close failed: %s", self.protocol, self.config.port, exc)

    def _guard(self, fn, *args):
        """Run a wire operation: reopen first after a port failure, attach last state/command to faults. A reply
        failure (ReplyError) leaves the port open: the next transaction may well succeed."""
        self.require_connected("talking to the controller")
        if self._broken:
            try:
                self._close()
            except Exception:
                pass
            try:
                self._open()
            except ArmError as exc:
                exc.last_state, exc.last_command = self.last_state, self.last_command
                raise
            self._broken = False
            log.warning("%s link on %s: reopened after a failure", self.protocol, self.config.port)
        try:
            return fn(*args)
        except ReplyError as exc:
            exc.last_state, exc.last_command = self.last_state, self.last_command
            raise
        except ArmLinkError as exc:
            self._broken = True
            exc.last_state, exc.last_command = self.last_state, self.last_command
            raise
        except ArmError as exc:
            exc.last_state, exc.last_command = self.last_state, self.last_command
            raise

    # --- public API -------------------------------------------------------------------------------------------
    def read_state(self, timeout_s: Optional[float] = None, attempts: int = READ_ATTEMPTS) -> ArmState:
        """Read the state outside the control loop: up to `attempts` transactions, each waiting at most `timeout_s`
        (default `config.timeout_s`) for its reply. Raises the last ReplyError when none came back valid (every
        miss is counted in `health`), PortClosedError at once when the port is gone."""
        budget = self.config.timeout_s if timeout_s is None else max(0.0, float(timeout_s))
        for k in range(max(1, attempts)):
            if k:
                self.health.record_retry()
            try:
                return self._read_once(budget)
            except ReplyError as exc:
                last = exc
        raise last

    def _read_once(self, budget: float) -> ArmState:
        """One read transaction; a lost or corrupt reply raises ReplyError (counted in `health`)."""
        t0 = time.monotonic()
        try:
            raw = self._guard(self._read_raw, budget)
        except ReplyError as exc:
            self.health.record_miss(exc.kind)
            raise
        self._read_times.append(time.monotonic() - t0)
        self.health.record_ok()
        self.last_state = ArmState(q=self.mapping.to_units(raw), raw=np.asarray(raw), timestamp=time.monotonic())
        return self.last_state

    def read_within(self, deadline: float, clock=time.monotonic, min_attempt_s: float = 0.0005
                    ) -> tuple[Optional[ArmState], Optional[ReplyError]]:
        """Read until a valid reply or `deadline` (clock seconds): (state, None), or (None, the last ReplyError)
        when the time ran out; (None, None) when there was no time for even one attempt (not a bus miss). Each
        attempt waits at most the time left (and `config.timeout_s`). The time left is split in two only when half
        of it still covers twice the usual (median) successful read (a real bus with return delays and USB latency
        needs its whole reply time; only then does a lost reply leave room for a retry). A port failure raises."""
        last: Optional[ReplyError] = None
        first = True
        while True:
            left = deadline - clock()
            if left < min_attempt_s:
                return None, last
            if not first:
                self.health.record_retry()
            first = False
            budget = left / 2 if left / 2 >= max(RETRY_SPLIT_S, 2 * self.read_time_estimate()) else left
            try:
                return self._read_once(min(self.config.timeout_s, budget)), None
            except ReplyError as exc:
                last = exc

    def read_time_estimate(self) -> float:
        """The median of the recent successful reads (s); 0 before the first. The median, not the worst: a read
        stretched by a busy host says nothing about the bus, and would stop the retries that ride through it."""
        return float(np.median(self._read_times)) if self._read_times else 0.0

    def check_command(self, q: Sequence[float]) -> np.ndarray:
        """The checks before anything moves: e-stop latch, the lifecycle (active: NotActiveError otherwise), finite
        values, and the range check: a command beyond the position limits by more than `limits.range_margin` raises
        OutOfRangeError when `limits.on_out_of_range` is "fault" (otherwise it is clipped and counted at the
        write)."""
        self.estop_latch.check()
        self.require_active("a joint command")
        q = check_finite(q, "command")
        if q.shape != (self.limits.n,):
            raise ConfigError(f"{self.protocol} link on {self.config.port}: command has shape {q.shape}, expected "
                              f"({self.limits.n},)")
        beyond = beyond_limits(q, self.limits)
        if beyond and self.limits.on_out_of_range == "fault":
            raise OutOfRangeError(
                f"{self.protocol} link on {self.config.port}: command beyond the joint limits by more than "
                f"{self.limits.range_margin:g} at joint index(es) {beyond} ({[round(float(q[i]), 4) for i in beyond]}, "
                f"limits {[(self.limits.lower[i], self.limits.upper[i]) for i in beyond]}); nothing was sent. Check "
                "the policy output and action un-normalisation, or set `safety.on_out_of_range: clip`.",
                last_state=self.last_state, last_command=q)
        return q

    def send_checked(self, q: np.ndarray, dt: Optional[float], now: float, reply_budget_s: Optional[float] = None
                     ) -> np.ndarray:
        """Clip and send a command that passed `check_command` (the link must still be active). Protocols whose
        command is answered with the state (framed) wait `reply_budget_s` (default config.timeout_s) for it and
        update `last_state`; a lost answer is counted in `health`, never a failed write."""
        self.require_active("a joint command")
        if dt is None and self._last_write_t is not None:
            dt = max(now - self._last_write_t, 1e-3)
        present = self.last_state.q if self.last_state is not None else None
        q_safe, notes = clip_command(q, present, self.limits, dt)
        if notes:
            self._count_clip(notes, now)
        raw = self.mapping.to_raw(q_safe)
        q_sent = self.mapping.to_units(raw)
        budget = self.config.timeout_s if reply_budget_s is None else max(0.0, float(reply_budget_s))
        try:
            state_raw = self._guard(self._write_raw, raw, budget)
        except ReplyError as exc:  # the command left; only its answer is missing
            self.health.record_miss(exc.kind)
            state_raw = None
        self.last_command, self._last_write_t = q_sent, now
        if state_raw is not None:
            self.health.record_ok()
            self.last_state = ArmState(q=self.mapping.to_units(state_raw), raw=np.asarray(state_raw),
                                       timestamp=time.monotonic())
        return q_sent

    def _count_clip(self, notes: list, now: float) -> None:
        self.clipped["commands"] += 1
        for n in notes:
            self.clipped["position" if n.startswith("position") else "step"] += 1
        self._clip_unlogged += 1
        if now - self._clip_logged_t >= CLIP_LOG_EVERY_S:
            log.warning("%s link on %s: command clipped (%s); %d clipped command(s) since the last warning, %d in "
                        "all", self.protocol, self.config.port, "; ".join(notes), self._clip_unlogged,
                        self.clipped["commands"])
            self._clip_logged_t, self._clip_unlogged = now, 0

    def torque(self, on: bool) -> dict:
        """Switch torque on or off on every servo; {id: state}. Raises ArmLinkError naming the ids that did not
        confirm (the others keep the new state: the caller decides what a partial result means). Lifecycle: torque
        on confirmed by every servo makes the link active; torque off (tried, confirmed or not) makes it connected; a
        torque on that failed changes nothing (it switched nothing off: a link that was active stays active)."""
        self.torque_report = {}
        if not on and self._lifecycle is LinkState.ACTIVE:
            self._lifecycle = LinkState.CONNECTED  # before the wire: a stop is never undone by a lost reply
        if on:
            self.estop_latch.check()
            self.hold_present()  # the goal := the present position first: enabling torque moves nothing
        confirmed = self._guard(self._torque_ids, bool(on))
        self.torque_report = _torque_report(confirmed, on)
        failed = [i for i, ok in confirmed.items() if not ok]
        if failed:
            raise ArmLinkError(f"{self.protocol} link on {self.config.port}: torque {'on' if on else 'off'} not "
                               f"confirmed by id(s) {failed} of {list(self.config.ids)}. Check power and wiring.",
                               last_state=self.last_state, last_command=self.last_command)
        if on:
            self._lifecycle = LinkState.ACTIVE
        return self.torque_report

    def set_torque_all(self, on: bool) -> dict:
        """Best effort for the stop paths: every id attempted (the port reopened once if it had failed); never
        raises. {id: "on"|"off"|"unconfirmed (...)"}, also kept in `torque_report`."""
        self.torque_report = {}
        try:
            return self.torque(on)
        except Exception as exc:  # never let a stop path raise; the report says which ids are unconfirmed
            if not self.torque_report:  # the change did not even reach the wire
                self.torque_report = {i: f"unconfirmed ({type(exc).__name__})" for i in self.config.ids}
            log.error("%s link on %s: torque %s: %s", self.protocol, self.config.port, "on" if on else "off", exc)
        return self.torque_report

    def hold_present(self) -> None:
        """Before torque on: make the goal the present position, so enabling torque moves nothing (a goal register
        left from an earlier session would make the arm jump). Protocols whose controller holds on its own skip it."""

    def set_watchdog(self, ms: int) -> Optional[dict]:
        """Arm (ms > 0) or clear (0) the controller-side watchdog on every id; None when the protocol has none."""
        return self._guard(self._watchdog, int(ms))

    def estop(self, reason: str = "estop() called") -> None:
        """Latch the e-stop and switch torque off (best effort: the latch holds even if the link is down); the link
        is no longer active."""
        self.estop_latch.trip(reason)
        self.set_torque_all(False)

    def clear_estop(self) -> None:
        self.estop_latch.clear()

    def ping(self) -> dict:
        """{id: model number or None}."""
        return {i: self._guard(self._ping, i) for i in self.config.ids}


def _torque_report(confirmed: dict, on: bool) -> dict:
    state = "on" if on else "off"
    return {i: (state if ok else f"unconfirmed ({state} not read back)") for i, ok in confirmed.items()}

