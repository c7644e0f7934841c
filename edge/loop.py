"""The standalone control loop: cameras -> asynchronous inference on the newest frames -> action-chunk scheduling ->
joint commands streamed at the controller rate, with the safety checks before every write.

Threads: each camera has its own capture thread (drivers.camera); one inference worker runs `policy.infer` on the
newest frames when the scheduler asks for a chunk; the control thread (the caller's) paces itself on monotonic
deadlines advancing by whole periods (overruns counted), reads the arm state, asks the scheduler for the command
and writes it. No fresh chunk in time -> hold the last command. Any fault (arm link, safety refusal, camera
stalled for too long, inference error or timeout) -> hold, torque as configured, the last seconds of states and
commands dumped to disk, stop. SIGINT -> the same safe stop without the fault.

Time stamps: `camera_to_serial_ms` runs from the camera frame's timestamp (monotonic, set when the frame reached
this process) to the end of the serial write of the first command computed with the chunk made from that frame."""
from __future__ import annotations

import collections
import json
import logging
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .chunking import Chunk, ChunkScheduler
from .config import ChunkingConfig, FaultConfig, PolicyConfig, RatesConfig
from .errors import ImageWAMEdgeError
from .timing import StageTimes, Ticker, percentiles

log = logging.getLogger(__name__)


class LoopFault(ImageWAMEdgeError):
    """The loop stopped on a fault; the message names the cause and the dump file."""


def select_state(q: np.ndarray, indices: Optional[Sequence[int]]) -> np.ndarray:
    """Arm joint vector -> policy state vector."""
    return np.asarray(q, dtype=np.float64) if indices is None else np.asarray(q, dtype=np.float64)[list(indices)]


def actions_to_targets(actions: np.ndarray, indices: Optional[Sequence[int]], mode: str,
                       q_obs: np.ndarray) -> np.ndarray:
    """Policy actions [H, Da] -> joint targets [H, J] (selected dims; deltas are added to the observed joints)."""
    a = np.asarray(actions, dtype=np.float64)
    a = a if indices is None else a[:, list(indices)]  # [H, J]
    return a + np.asarray(q_obs, dtype=np.float64)[None] if mode == "delta" else a


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

    def close(self) -> None:
        self.q.put(None)
        self.join(timeout=30)


class ControlLoop:
    """`run(seconds)` -> summary dict. `policy`: `infer(obs) -> {"actions", "timings_ms", "step_ms"}` and `spec`;
    `cameras`: connected drivers.camera objects in canvas-slot order; `arm`: a drivers.arm MultiArm."""

    def __init__(self, policy, cameras: list, arm, instruction: str, rates: RatesConfig = RatesConfig(),
                 chunking: ChunkingConfig = ChunkingConfig(), fault: FaultConfig = FaultConfig(),
                 policy_cfg: PolicyConfig = PolicyConfig(engines="-"), replan: Optional[int] = None,
                 recorder=None, clock: Callable[[], float] = time.monotonic,
                 state_hooks: Sequence[Callable[[np.ndarray], None]] = ()):
        self.policy, self.cameras, self.arm, self.instruction = policy, list(cameras), arm, instruction
        self.state_hooks = tuple(state_hooks)  # called with every joint state read (e.g. a camera that renders the arm)
        self.rates, self.fault_cfg, self.pcfg, self.clock = rates, fault, policy_cfg, clock
        self.period = 1.0 / rates.control_hz
        self.action_dt = 1.0 / rates.action_hz
        replan = chunking.replan or replan or getattr(getattr(policy, "embodiment", None), "replan", 8)
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

    # --- inference worker -------------------------------------------------------------------------------------
    def _worker(self) -> None:
        k = 0
        while not self._stop.is_set():
            if not self._request.wait(0.02):
                continue
            self._request.clear()
            try:
                frames = [cam.read_latest(self.rates.camera_max_age_s) for cam in self.cameras]
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
                obs = {"images": images, "state": select_state(q_obs, self.pcfg.state_indices),
                       "instruction": self.instruction}
                out = self.policy.infer(obs)
                targets = actions_to_targets(out["actions"], self.pcfg.action_indices, self.pcfg.action_mode, q_obs)
            except Exception as exc:
                self._worker_error = exc
                return
            t_frame = min(f.timestamp for f in frames)
            self.times.add_many({("inference" if s == "total" else s): v for s, v in out["timings_ms"].items()})
            for v in out.get("step_ms", ()):
                self.times.add("denoise_step", v)
            self.times.add("frame_to_chunk", (self.clock() - t_frame) * 1e3)
            chunk = Chunk(targets, t0=t_frame, dt=self.action_dt, index=k)
            k += 1
            item = None
            if self._recorder is not None:
                item = {"images": images, "state": obs["state"], "actions": np.asarray(out["actions"], np.float32),
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
        """Run until `seconds` pass, `stop` is set, SIGINT, or a fault. Returns the summary (also on a fault)."""
        from drivers.arm.safety import check_finite

        stop = stop or threading.Event()
        old_handler = None
        if threading.current_thread() is threading.main_thread():
            def on_sigint(signum, frame):
                self.stopped_by = "SIGINT"
                stop.set()
            old_handler = signal.signal(signal.SIGINT, on_sigint)
        worker = threading.Thread(target=self._worker, name="inference", daemon=True)
        if self._recorder is not None:
            self._recorder.start()
        q = np.asarray(self.arm.read_state(), dtype=np.float64)
        self._notify(q)
        q_start = q.copy()
        last_cmd = q.copy()
        with self._lock:
            self._state = q.copy()
        worker.start()
        ticker = Ticker(self.period, clock=self.clock)
        t_begin = self.clock()
        ticker.start()
        pending_first: Optional[Chunk] = None
        pending_item = None
        c = self.counters
        try:
            while not stop.is_set():
                if seconds is not None and self.clock() - t_begin >= seconds:
                    self.stopped_by = self.stopped_by or "time"
                    break
                late = ticker.wait()
                t0 = self.clock()
                self.times.add("tick_lateness", late * 1e3)
                self._check_worker(t0)
                t1 = t0
                got = self._take_chunk()
                if got is not None:
                    self.scheduler.add(got[0], t1)
                    pending_first, pending_item = got
                    self.times.add("chunk_latency", (t1 - got[0].t0) * 1e3)
                if self.scheduler.due(t1):
                    with self._lock:
                        if self._requested_at is None and self._inbox is None:
                            self._requested_at = t1
                            self._request.set()
                            c["requests"] += 1
                target = self.scheduler.target(t1)
                if target is None:
                    c["hold_ticks"] += 1
                    cmd = last_cmd
                else:
                    cmd = check_finite(target, "policy command")
                t2 = self.clock()
                self.times.add("write_lateness", (t2 - ticker.deadline) * 1e3)
                sent = np.asarray(self.arm.write(cmd, dt=self.period), dtype=np.float64)
                t3 = self.clock()
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
                    q = np.asarray(self.arm.read_state(), dtype=np.float64)
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
            self.stopped_by = self.stopped_by or "stop"
            self._safe_stop(last_cmd, self.fault_cfg.torque_on_stop)
        except Exception as exc:
            self.fault = f"{type(exc).__name__}: {exc}"
            self.stopped_by = "fault"
            log.error("control loop fault: %s", self.fault)
            self._safe_stop(last_cmd, self.fault_cfg.torque)
            self.dump_path = self._dump(exc)
        finally:
            self._stop.set()
            worker.join(timeout=2.0)  # a stuck inference call cannot be interrupted; the thread is a daemon
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
            if self._recorder is not None:
                self._recorder.close()
        duration = self.clock() - t_begin
        return self._summary(ticker, duration, q_start, last_cmd)

    def _notify(self, q: np.ndarray) -> None:
        for hook in self.state_hooks:
            hook(q)

    def _safe_stop(self, hold: np.ndarray, torque: str) -> None:
        """Hold the last command; torque off when configured. Best effort: every step runs even if one fails."""
        try:
            self.arm.write(hold, dt=self.period)
        except Exception as exc:
            log.warning("safe stop: hold command not sent (%s)", exc)
        if torque == "off":
            for link in getattr(self.arm, "links", [self.arm]):
                try:
                    link.torque(False)
                except Exception as exc:
                    log.warning("safe stop: torque off failed on %s (%s)", getattr(link, "config", link), exc)

    def _dump(self, exc: BaseException) -> Optional[str]:
        """The last `dump_seconds` of states and commands as .npz, plus a JSON with the reason."""
        try:
            out = Path(self.fault_cfg.dump_dir)
            out.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{int(time.time() * 1000) % 1000:03d}"
            path = out / f"fault-{stamp}.npz"
            h = list(self.history)
            t = np.array([r[0] for r in h], dtype=np.float64)
            width = len(h[0][1]) if h else 0
            np.savez(path, t=t, state=np.array([r[1] for r in h], dtype=np.float64).reshape(len(h), width),
                     command=np.array([r[2] for r in h], dtype=np.float64).reshape(len(h), width),
                     hold=np.array([r[3] for r in h], dtype=bool))
            info = {"reason": self.fault, "type": type(exc).__name__, "samples": len(h),
                    "seconds": float(t[-1] - t[0]) if len(t) > 1 else 0.0,
                    "last_state": _jsonable(getattr(exc, "last_state", None)),
                    "last_command": _jsonable(getattr(exc, "last_command", None)),
                    "torque": self.fault_cfg.torque}
            path.with_suffix(".json").write_text(json.dumps(info, indent=1))
            return str(path)
        except Exception as dump_exc:  # the dump must never hide the fault
            log.error("fault dump failed: %s", dump_exc)
            return None

    def _summary(self, ticker: Ticker, duration: float, q_start: np.ndarray, q_end: np.ndarray) -> dict:
        lat = self.times.summary()
        r3 = lambda d: {k: (None if v != v else round(v, 3)) for k, v in d.items()}  # noqa: E731  (NaN -> None)
        out = {"steps": ticker.ticks, "chunks": self.scheduler.added, "commands_sent": self.counters["commands_sent"],
               "overruns": ticker.overruns, "missed_periods": ticker.missed, "hold_ticks": self.counters["hold_ticks"],
               "requests": self.counters["requests"], "camera_stalls": self.counters["camera_stalls"],
               "duration_s": round(duration, 3), "control_hz": self.rates.control_hz,
               "achieved_hz": round(ticker.ticks / duration, 2) if duration > 0 else 0.0,
               "latency_ms": {k: r3(v) for k, v in lat.items() if k != "camera_to_serial"},
               "camera_to_serial_ms": r3(percentiles(self.times.samples("camera_to_serial"))),
               "arm_travel_max": round(float(np.max(np.abs(np.asarray(q_end) - q_start))), 5) if len(q_start) else 0.0,
               "stopped_by": self.stopped_by, "fault": self.fault, "dump": self.dump_path}
        if self._recorder is not None:
            out["recorded_steps"], out["record_dropped"] = self._recorder.written, self._recorder.dropped
        return out


def _jsonable(v):
    if v is None:
        return None
    q = getattr(v, "q", v)
    try:
        return np.asarray(q, dtype=np.float64).tolist()
    except (TypeError, ValueError):
        return str(v)
