"""The standalone control loop: cameras -> asynchronous inference on the newest frames -> action-chunk scheduling ->
joint commands streamed at the controller rate, with the safety checks before every write.

Threads: each camera has its own capture thread (drivers.camera); one inference worker runs `policy.infer` on the
newest frames and the joint state when the scheduler asks for a chunk (a RobotPolicy: the joint commands in robot
units come out of the policy's own output transform, edge.transforms.JointMap, mapped and checked there, once); the
control thread (the caller's) paces itself on monotonic deadlines advancing by whole periods (overruns counted),
reads the arm state, asks the scheduler for the command and writes it (the arm link enforces the safety limits). No
fresh chunk in time -> hold the last command. Any fault (arm link, safety refusal, camera stalled for too long,
inference error or timeout) -> hold, torque as configured, the last seconds of states and commands dumped to disk,
stop. SIGINT -> the same safe stop without the fault.

Time stamps: `camera_to_serial_ms` runs from the camera frame's timestamp (monotonic, set when the frame reached
this process) to the end of the serial write of the first command computed with the chunk made from that frame."""
from __future__ import annotations

import collections
import gc
import json
import logging
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .chunking import Chunk, ChunkScheduler
from .config import ChunkingConfig, FaultConfig, PolicyConfig, RatesConfig
from .atomic import atomic_file, write_text
from .errors import ConfigError, ImageWAMEdgeError
from .loop_bus import BusMonitor
from .realtime import clear_realtime, raise_threads, restore_threads, set_realtime
from .stop_signals import StopSignals
from .timing import StageTimes, Ticker, percentiles, summarize
from .transforms import JointMap, RobotPolicy

log = logging.getLogger(__name__)

GIL_SWITCH_S = 0.0005  # while the loop runs: a thread holding the GIL hands it over after 0.5 ms (default 5 ms)
READ_GUARD_S = 0.001  # reads end this long before the next tick's deadline, so the next command leaves on time


class LoopFault(ImageWAMEdgeError):
    """The loop stopped on a fault; the message names the cause and the dump file."""


def robot_policy(policy, pcfg: PolicyConfig, n_joints: int, state_dim: int, action_dim: int,
                 source: str = "run config") -> RobotPolicy:
    """`policy` with the joint transforms the config's `policy` section declares (state_indices, action_indices,
    action_scale, action_offset, action_mode) for arms of `n_joints` joints; ConfigError naming the field when they
    do not fit the model's `state_dim` / `action_dim`."""
    return RobotPolicy(policy, JointMap(n_joints, state_dim, action_dim, pcfg.state_indices, pcfg.action_indices,
                                        pcfg.action_mode, pcfg.action_scale, pcfg.action_offset, source=source))


class _Recorder(threading.Thread):
    """Writes recorded steps off the control thread (RecordingWriter.add per step)."""

    def __init__(self, writer):
        super().__init__(name="recorder", daemon=True)
        self.writer, self.q, self.dropped, self.written = writer, queue.Queue(maxsize=64), 0, 0

    def put(self, item) -> None:
        try:
            self.q.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            try:
                self.writer.add(**item)
                self.written += 1
            except Exception as exc:  # a full disk must not stop the robot; it is reported in the summary
                log.error("recording: %s", exc)
                self.dropped += 1

    def close(self, timeout_s: float = 5.0) -> None:
        """Drain the queue for at most `timeout_s` (a stop must fit docker's 10 s grace: what is left is counted
        as dropped), then close the writer's episode unless a step is still being written."""
        try:
            self.q.put(None, timeout=timeout_s)
        except queue.Full:
            pass
        self.join(timeout=timeout_s)
        if self.is_alive():
            self.dropped += self.q.qsize()
            log.error("recording: %d step(s) still queued after %.0f s; the episode stays open (its steps load)",
                      self.q.qsize(), timeout_s)
            return
        close = getattr(self.writer, "close", None)
        if close is not None:
            try:
                close()
            except Exception as exc:
                log.error("recording: closing the episode failed: %s", exc)


def check_dump_dir(dump_dir: str) -> None:
    """`fault.dump_dir` must be writable before the robot moves: a fault's dump is written there."""
    path = Path(dump_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"field `fault.dump_dir`: {dump_dir} is not writable ({exc.strerror or exc}); a fault's "
                          "states and commands are dumped there. Point it at a writable directory (e.g. "
                          "~/imagewam-faults) or fix its permissions") from None


class ControlLoop:
    """`run(seconds)` -> summary dict. `policy`: a RobotPolicy (`robot_policy(...)`: the policy with the config's
    joint transforms), `infer({"images", "joints", "instruction"}) -> {"joints" [H, J] in robot units, "actions",
    "state", "timings_ms", "step_ms"}`; `cameras`: connected drivers.camera objects in canvas-slot order; `arm`: a
    drivers.arm MultiArm; `state_hooks`: called with every joint state read (an environment that renders the arm)."""

    def __init__(self, policy: RobotPolicy, cameras: list, arm, instruction: str, rates: RatesConfig = RatesConfig(),
                 chunking: ChunkingConfig = ChunkingConfig(), fault: FaultConfig = FaultConfig(), *,
                 replan: Optional[int] = None, recorder=None, clock: Callable[[], float] = time.monotonic,
                 state_hooks: Sequence[Callable[[np.ndarray], None]] = ()):
        if not isinstance(policy, RobotPolicy):
            raise TypeError(f"the control loop streams joint commands: give it a RobotPolicy (edge.loop.robot_policy"
                            f"(policy, config.policy, n_joints, state_dim, action_dim)), not {type(policy).__name__}")
        self.policy, self.cameras, self.arm, self.instruction = policy, list(cameras), arm, instruction
        self.state_hooks = tuple(state_hooks)
        self.rates, self.fault_cfg, self.clock = rates, fault, clock
        self.period = 1.0 / rates.control_hz
        self.action_dt = 1.0 / rates.action_hz
        replan = chunking.replan or replan or getattr(getattr(policy.policy, "embodiment", None), "replan", 8)
        self.scheduler = ChunkScheduler(replan, chunking.blend, chunking.blend_s, chunking.ensemble_m)
        self.times = StageTimes()
        self.history = collections.deque(maxlen=max(2, int(fault.dump_seconds * rates.control_hz)))
        self._recorder = _Recorder(recorder) if recorder is not None else None
        self._stop = threading.Event()
        self._request = threading.Event()
        self._lock = threading.Lock()
        self._inbox: Optional[tuple] = None  # (chunk, record item) from the worker
        self._worker_error: Optional[BaseException] = None
        self._state: Optional[np.ndarray] = None
        self._requested_at: Optional[float] = None
        self._last_frame_ok = clock()
        self.counters = collections.Counter()
        self.fault: Optional[str] = None
        self.dump_path: Optional[str] = None
        self.stopped_by = ""
        self.bus = BusMonitor(getattr(arm, "links", [arm]), fault.stale_budget(rates), self.times, clock)
        self.watchdogs: dict = {}  # port -> armed watchdog (ms)
        self.torque_done: Optional[str] = None  # the torque handling the stop applied: "hold" | "off"
        self.signals_received = 0
        self.realtime: dict = {}
        self.realtime_threads: dict = {}
        check_dump_dir(fault.dump_dir)

    # --- inference worker -------------------------------------------------------------------------------------
    def _worker(self) -> None:
        k = 0
        while not self._stop.is_set():
            if not self._request.wait(0.02):
                continue
            self._request.clear()
            try:
                t_cam = self.clock()
                frames = [cam.read_latest(self.rates.camera_max_age_s) for cam in self.cameras]
                self.times.add("camera_read", (self.clock() - t_cam) * 1e3)
            except Exception as exc:  # CameraStalledError and friends: no chunk now; a fault if it lasts
                self.counters["camera_stalls"] += 1
                if self.clock() - self._last_frame_ok > self.fault_cfg.camera_timeout_s:
                    self._worker_error = exc
                    return
                with self._lock:
                    self._requested_at = None  # ask again on the next tick
                time.sleep(0.005)
                continue
            self._last_frame_ok = self.clock()
            with self._lock:
                q_obs = None if self._state is None else self._state.copy()
            try:
                images = [f.color for f in frames]
                out = self.policy.infer({"images": images, "joints": q_obs, "instruction": self.instruction})
            except Exception as exc:
                self._worker_error = exc
                return
            t_frame = min(f.timestamp for f in frames)
            self.times.add_many({("inference" if s == "total" else s): v for s, v in out["timings_ms"].items()})
            for v in out.get("step_ms", ()):
                self.times.add("denoise_step", v)
            self.times.add("frame_to_chunk", (self.clock() - t_frame) * 1e3)
            chunk = Chunk(out["joints"], t0=t_frame, dt=self.action_dt, index=k)
            k += 1
            item = None
            if self._recorder is not None:
                item = {"images": images, "state": out["state"], "actions": np.asarray(out["actions"], np.float32),
                        "t": t_frame}
            with self._lock:
                self._inbox = (chunk, item)

    # --- control thread ---------------------------------------------------------------------------------------
    def _take_chunk(self):
        with self._lock:
            got, self._inbox = self._inbox, None
            if got is not None:
                self._requested_at = None
            return got

    def _check_worker(self, now: float) -> None:
        if self._worker_error is not None:
            exc = self._worker_error
            raise LoopFault(f"inference worker: {type(exc).__name__}: {exc}") from exc
        with self._lock:
            req = self._requested_at
        if req is not None and now - req > self.fault_cfg.inference_timeout_s:
            raise LoopFault(f"no action chunk {now - req:.2f} s after it was requested (fault.inference_timeout_s = "
                            f"{self.fault_cfg.inference_timeout_s}): the policy is stalled or far too slow")

    def run(self, seconds: Optional[float] = None, stop: Optional[threading.Event] = None) -> dict:
        """Run until `seconds` pass, `stop` is set, SIGINT/SIGTERM/SIGHUP, or a fault. Returns the summary (also on
        a fault). The bus is read within the time left in each tick; only a state older than the staleness budget,
        a dead port, or any other fault stops the loop."""
        stop = stop or threading.Event()
        signals = StopSignals(stop)
        worker = threading.Thread(target=self._worker, name="inference", daemon=True)
        ticker = Ticker(self.period, clock=self.clock)
        t_begin = self.clock()
        q_start = last_cmd = None
        pending_first: Optional[Chunk] = None
        pending_item = None
        c = self.counters
        old_switch = sys.getswitchinterval()
        with signals:
            try:
                sys.setswitchinterval(GIL_SWITCH_S)  # the control thread gets the GIL back within ~0.5 ms
                if self._recorder is not None:
                    self._recorder.start()
                self._arm_watchdogs()  # (before the first read: its per-servo read-backs take time)
                q = self.bus.first_read()  # inside the fault path: a dead bus at start is a fault with a dump
                self._notify(q)
                q_start, last_cmd = q.copy(), q.copy()
                with self._lock:
                    self._state = q.copy()
                worker.start()
                # after the threads are started (they would inherit it): the control thread preempts inference; the
                # loop's other threads rise above other processes, so none is preempted while holding the GIL
                self.realtime = set_realtime(self.rates.realtime_priority)
                if self.realtime.get("policy") == "SCHED_FIFO":
                    self.realtime_threads = raise_threads(
                        [worker] + ([self._recorder] if self._recorder else [])
                        + [t for t in (getattr(c, "capture_thread", None) for c in self.cameras) if t is not None])
                gc.freeze()  # everything set up so far is permanent: the collector's passes stay short during the run
                t_begin = self.clock()
                ticker.start()
                last_write = t_begin
                while not stop.is_set():
                    if seconds is not None and self.clock() - t_begin >= seconds:
                        self.stopped_by = "time"
                        break
                    late = ticker.wait()
                    t0 = self.clock()
                    self.times.add("tick_lateness", late * 1e3)
                    self._check_watchdogs(t0 - last_write)
                    self._check_worker(t0)
                    got = self._take_chunk()
                    if got is not None:
                        self.scheduler.add(got[0], t0)
                        pending_first, pending_item = got
                        self.times.add("chunk_latency", (t0 - got[0].t0) * 1e3)
                    if self.scheduler.due(t0):
                        with self._lock:
                            if self._requested_at is None and self._inbox is None:
                                self._requested_at = t0
                                self._request.set()
                                c["requests"] += 1
                    target = self.scheduler.target(t0)  # joint commands in robot units, finite (RobotPolicy)
                    if target is None:
                        c["hold_ticks"] += 1
                    cmd = last_cmd if target is None else target
                    read_deadline = ticker.deadline + self.period - READ_GUARD_S  # the next write stays on time
                    t2 = self.clock()
                    self.times.add("write_lateness", (t2 - ticker.deadline) * 1e3)
                    # a command answered with the state (framed) waits half the read time; a lost answer leaves the
                    # other half to a READ_STATE
                    sent = np.asarray(self.arm.write(cmd, dt=self.period,
                                                     reply_budget_s=max(0.0, read_deadline - t2) / 2), dtype=np.float64)
                    t3 = last_write = self.clock()
                    io_s = t3 - t2
                    self.times.add("serial_write", (t3 - t2) * 1e3)
                    c["commands_sent"] += 1
                    last_cmd = sent
                    if pending_first is not None and target is not None:
                        self.times.add("camera_to_serial", (t3 - pending_first.t0) * 1e3)
                        if self._recorder is not None and pending_item is not None:
                            self._recorder.put({**pending_item, "sent": sent.astype(np.float32)})
                        pending_first = pending_item = None
                    if ticker.ticks % self.rates.state_every == 0:  # after the write: the command leaves on time
                        q = self.bus.read(t2, read_deadline)
                        t5 = self.clock()
                        io_s += t5 - t3
                        self.times.add("read_state", (t5 - t3) * 1e3)
                        with self._lock:
                            self._state = q.copy()
                        self._notify(q)
                    self.history.append((t3, q, sent, target is None))
                    t4 = self.clock()
                    self.times.add("tick", (t4 - t0) * 1e3)
                    self.times.add("overhead", (t4 - t0 - io_s) * 1e3)
                    ticker.done()
                self.stopped_by = signals.name or self.stopped_by or "stop"
                self._safe_stop(last_cmd, self.fault_cfg.torque_on_stop, clean=True)
            except Exception as exc:
                self.fault = f"{type(exc).__name__}: {exc}"
                self.stopped_by = "fault"
                log.error("control loop fault: %s", self.fault)
                self._safe_stop(last_cmd, self.fault_cfg.torque, clean=False)
                self.dump_path = self._dump(exc)
            finally:
                gc.unfreeze()
                sys.setswitchinterval(old_switch)
                if self.realtime.get("policy") == "SCHED_FIFO":
                    clear_realtime()
                    restore_threads(self.realtime_threads.get("tids", []))
                self._stop.set()
                if worker.is_alive():
                    worker.join(timeout=2.0)  # a stuck inference call cannot be interrupted; the thread is a daemon
                if self._recorder is not None and self._recorder.is_alive():
                    self._recorder.close()
        self.signals_received = signals.count
        duration = self.clock() - t_begin
        return self._summary(ticker, duration, q_start, last_cmd)

    def _notify(self, q: np.ndarray) -> None:
        for hook in self.state_hooks:
            hook(q)

    def _arm_watchdogs(self) -> None:
        """Arm each link's controller-side watchdog (Dynamixel bus watchdog) for the run: cleared first (a watchdog
        left tripped by an earlier run refuses a new value and makes the servos ignore goals), then set; a servo
        that does not confirm both is a fault before anything moves."""
        for link in self.bus.links:
            ms = link.watchdog_ms
            if ms <= 0:
                continue
            cleared, armed = link.set_watchdog(0), link.set_watchdog(ms)
            self.watchdogs[link.config.port] = {"ms": ms, "armed": {str(i): bool(cleared[i] and armed[i])
                                                                    for i in armed}}
            bad = [i for i in armed if not (cleared[i] and armed[i])]
            if bad:
                from drivers.errors import ArmLinkError

                raise ArmLinkError(f"{link.protocol} link on {link.config.port}: the bus watchdog ({ms} ms) was not "
                                   f"confirmed by id(s) {bad}; a tripped watchdog makes a servo ignore goals. Check "
                                   "power and wiring, or set `link: {watchdog_ms: 0}` to run without it")

    def _check_watchdogs(self, silent_s: float) -> None:
        """The host was silent on the bus longer than a watchdog (a stalled process): the servos stopped and ignore
        goals until the watchdog is cleared; clear and re-arm it so the loop commands them again."""
        for link in self.bus.links:
            ms = (self.watchdogs.get(link.config.port) or {}).get("ms")
            if ms and silent_s * 1e3 > 0.8 * ms:
                log.warning("%s link on %s: the bus was silent %.0f ms (watchdog %d ms): re-arming the watchdog",
                            link.protocol, link.config.port, silent_s * 1e3, ms)
                cleared, armed = link.set_watchdog(0), link.set_watchdog(ms)
                if not all(cleared.values()) or not all(armed.values()):
                    log.error("%s link on %s: watchdog re-arm not confirmed: cleared %s armed %s", link.protocol,
                              link.config.port, cleared, armed)
                self.counters["watchdog_rearms"] += 1

    def _safe_stop(self, hold: Optional[np.ndarray], torque: str, clean: bool) -> None:
        """Hold the last command; then the configured torque on EVERY servo of every link, each attempted even when
        one fails and read back ("hold": torque on with the goal at the present position, "off": torque off); clear
        the watchdogs on a clean stop. Best effort: every step runs even if one fails, and the per-id outcome lands
        in the summary and the dump."""
        if hold is not None:
            try:
                self.arm.write(hold, dt=self.period)
            except Exception as exc:
                log.warning("safe stop: hold command not sent (%s)", exc)
        for link in self.bus.links:
            if clean and self.watchdogs.get(link.config.port):
                try:
                    link.set_watchdog(0)
                except Exception as exc:
                    log.warning("safe stop: watchdog not cleared on %s (%s)", link.config.port, exc)
            link.set_torque_all(torque != "off")
        self.torque_done = torque

    def _dump(self, exc: BaseException) -> Optional[str]:
        """The last `dump_seconds` of states and commands as .npz, plus a JSON with the reason, the bus health and
        the torque state of every servo."""
        try:
            out = Path(self.fault_cfg.dump_dir)
            out.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{int(time.time() * 1000) % 1000:03d}"
            path = out / f"fault-{stamp}.npz"
            h = list(self.history)
            t = np.array([r[0] for r in h], dtype=np.float64)
            width = len(h[0][1]) if h else 0
            with atomic_file(path) as f:
                np.savez(f, t=t, state=np.array([r[1] for r in h], dtype=np.float64).reshape(len(h), width),
                         command=np.array([r[2] for r in h], dtype=np.float64).reshape(len(h), width),
                         hold=np.array([r[3] for r in h], dtype=bool))
            info = {"reason": self.fault, "type": type(exc).__name__, "samples": len(h),
                    "seconds": float(t[-1] - t[0]) if len(t) > 1 else 0.0,
                    "last_state": _jsonable(getattr(exc, "last_state", None)),
                    "last_command": _jsonable(getattr(exc, "last_command", None)),
                    "torque": self.fault_cfg.torque, "bus": self.bus.report(),
                    "staleness_ms": summarize(self.times.samples("staleness"))}
            write_text(path.with_suffix(".json"), json.dumps(info, indent=1))
            return str(path)
        except Exception as dump_exc:  # the dump must never hide the fault
            log.error("fault dump failed: %s", dump_exc)
            return None

    def _summary(self, ticker: Ticker, duration: float, q_start: Optional[np.ndarray],
                 q_end: Optional[np.ndarray]) -> dict:
        lat = self.times.summary()
        r3 = lambda d: {k: (None if v != v else round(v, 3)) for k, v in d.items()}  # noqa: E731  (NaN -> None)
        travel = (round(float(np.max(np.abs(np.asarray(q_end) - q_start))), 5)
                  if q_start is not None and q_end is not None and len(q_start) else 0.0)
        bus = self.bus.report()
        out = {"steps": ticker.ticks, "chunks": self.scheduler.added, "commands_sent": self.counters["commands_sent"],
               "overruns": ticker.overruns, "missed_periods": ticker.missed, "hold_ticks": self.counters["hold_ticks"],
               "requests": self.counters["requests"], "camera_stalls": self.counters["camera_stalls"],
               "duration_s": round(duration, 3), "control_hz": self.rates.control_hz,
               "achieved_hz": round(ticker.ticks / duration, 2) if duration > 0 else 0.0,
               "latency_ms": {k: r3(v) for k, v in lat.items() if k != "camera_to_serial"},
               "camera_to_serial_ms": r3(percentiles(self.times.samples("camera_to_serial"))),
               "arm_travel_max": travel, "stopped_by": self.stopped_by, "fault": self.fault, "dump": self.dump_path,
               "cadence": cadence_report(self.times, ticker, duration, self.rates.control_hz),
               "bus": bus, "staleness_ms": summarize(self.times.samples("staleness")),
               "stale_ticks": self.bus.stale_ticks,
               "clipped_commands": sum(b["clipped"]["commands"] for b in bus),
               "torque": {b["port"]: b["torque"] for b in bus}, "torque_mode": self.torque_done,
               "watchdog": dict(self.watchdogs), "watchdog_rearms": self.counters["watchdog_rearms"],
               "signals": self.signals_received, "realtime": {**self.realtime, "other_threads": {k: v for k, v in self.realtime_threads.items()
                                                                                if k != "tids"}}}
        if self._recorder is not None:
            out["recorded_steps"], out["record_dropped"] = self._recorder.written, self._recorder.dropped
        return out


def cadence_report(times: StageTimes, ticker: Ticker, duration: float, target_hz: float) -> dict:
    """LeRobot-style cadence: Hz achieved vs target, ticks over budget, per stage mean / p99 / worst (ms)."""
    stages = {"read": "read_state", "write": "serial_write", "write_lateness": "write_lateness",
              "inference": "inference", "camera": "camera_read", "tick": "tick"}
    out = {"target_hz": target_hz, "achieved_hz": round(ticker.ticks / duration, 2) if duration > 0 else 0.0,
           "ticks": ticker.ticks, "ticks_over_budget": ticker.overruns, "missed_periods": ticker.missed}
    for name, key in stages.items():
        s = summarize(times.samples(key))
        out[name] = {"mean": s["mean"], "p99": s["p99"], "worst": s["max"], "n": s["n"]}
    return out


def _jsonable(v):
    if v is None:
        return None
    q = getattr(v, "q", v)
    try:
        return np.asarray(q, dtype=np.float64).tolist()
    except (TypeError, ValueError):
        return str(v)
