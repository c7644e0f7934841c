"""`run --config FILE`: one validated YAML file for the whole robot (cameras, policy, prompt cache, calibration
files, one or two arm links, rates, chunking, safety limits, fault handling). Every error names the file, the
field (`arms[0].baudrate`) and the fix. Example files per supported setup: edge/configs/*.yaml.

Pure parsing: nothing here opens a device or imports torch."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"  # the embedded default (`run` without --config)
BACKENDS = ("onnxruntime", "tensorrt", "torch", "remote")  # remote: a Triton server computes it (edge/serve)
REMOTE_URL = re.compile(r"[\w.\-\[\]:]+:\d{1,5}")  # policy.url: host:port of the server's gRPC endpoint
FALLBACKS = ("torch",)  # policy.fallback: what runs when the engines cannot be loaded
TORCH_DEVICE = r"cpu|cuda(:[0-9]+)?"
CAMERA_KINDS = ("realsense", "sim", "task")  # task: the closed-loop toy task (edge/task)
PROTOCOLS = ("dynamixel", "feetech", "framed")
ACTION_MODES = ("absolute", "delta")
ON_FAULT_TORQUE = ("hold", "off")
BLENDS = ("crossfade", "ensemble", "none")
_MISSING = object()


class _Fields:
    """Reads one mapping of the YAML file; every complaint carries `file: field`."""

    def __init__(self, data: Any, where: str, source: str):
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: `{where}` must be a mapping (key: value lines), got {type(data).__name__}")
        self.data, self.where, self.source = dict(data), where, source
        self.used: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def err(self, key: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.source}: field `{self.name(key)}` {msg}")

    def get(self, key: str, default: Any = _MISSING, kind: type | tuple = object, choices=None, minimum=None,
            maximum=None, example: str = "") -> Any:
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            if default is _MISSING:
                raise self.err(key, "is missing" + (f"; e.g. `{self.name(key)}: {example}`" if example else ""))
            return default
        v = self.data[key]
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if kind is not object and (not isinstance(v, kind) or (isinstance(v, bool) and kind in (int, float))):
            want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            if isinstance(v, bool) and kind is str:
                raise self.err(key, f"must be a string, got the boolean {v!r}: YAML reads unquoted on/off/yes/no as "
                                    f"booleans, so quote it (e.g. {key}: \"off\")")
            raise self.err(key, f"must be {want}, got {v!r}" + (f" (e.g. {example})" if example else ""))
        if choices is not None and v not in choices:
            raise self.err(key, f"must be one of {list(choices)}, got {v!r}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if isinstance(v, float) and not math.isfinite(v):
                raise self.err(key, f"must be finite, got {v!r}")
            if minimum is not None and v < minimum:
                raise self.err(key, f"must be >= {minimum}, got {v!r}")
            if maximum is not None and v > maximum:
                raise self.err(key, f"must be <= {maximum}, got {v!r}")
        return v

    def path(self, key: str, base: Path, default: Any = None) -> Optional[str]:
        v = self.get(key, default, kind=str)
        if v is None or v.startswith("@"):
            return v
        p = Path(v).expanduser()
        return str(p if p.is_absolute() else (base / p))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(f"{self.source}: unknown field(s) {', '.join(f'`{self.name(k)}`' for k in unknown)} "
                              f"(known here: {sorted(self.used)}); check the spelling")


@dataclass(frozen=True)
class CameraConfig:
    kind: str  # realsense | sim
    slot: str  # canvas slot it fills (libero: agentview, wrist; robotwin: cam_high, left_wrist, right_wrist)
    device: dict = field(default_factory=dict)  # RealSenseConfig / SimCameraConfig fields
    intrinsics: Optional[str] = None  # calibration file checked at start (serial and size)
    handeye: Optional[str] = None


@dataclass(frozen=True)
class PolicyConfig:
    backend: str = "onnxruntime"
    engines: Optional[str] = None  # "@default": the embedded default's cached engines
    checkpoint: Optional[str] = None  # torch backend (workstation)
    prompt_cache: Optional[str] = None
    steps: Optional[int] = None
    threads: int = 0
    action_mode: str = "absolute"  # absolute joint targets, or deltas added to the state of the observation
    action_indices: Optional[tuple] = None  # action dims -> joints in arm order (default: all, in order)
    state_indices: Optional[tuple] = None  # arm joints -> policy state (default: all, in order)
    # torch backend device: cpu | cuda | cuda:N (None: cpu for backend torch, cuda for the fallback)
    device: Optional[str] = None
    compile: bool = False  # torch backend: torch.compile inside the CUDA graphs
    fallback: Optional[str] = None  # "torch": the checkpoint on the torch backend when the engines cannot be loaded
    url: Optional[str] = None  # backend remote: host:port of the Triton gRPC endpoint (`imagewam-edge serve`)
    timeout_s: float = 2.0  # backend remote: deadline of one control step's request
    # policy action units -> robot units per joint, arms in order: q = scale * action + offset (a number, or one per
    # joint; edge.transforms.JointMap, the policy's output transform)
    action_scale: float | tuple[float, ...] = 1.0
    action_offset: float | tuple[float, ...] = 0.0

    def torch_device(self) -> str:
        """Where the torch backend runs: `device`, else cpu for backend torch and cuda for the fallback."""
        return self.device or ("cpu" if self.backend == "torch" else "cuda")


@dataclass(frozen=True)
class ArmConfig:
    protocol: str
    port: str  # "@sim": start a simulated controller (own process, pty) and use its port
    ids: tuple
    baudrate: int = 1_000_000
    calibration: Optional[str] = None  # JointMapping YAML ({joints: [...]})
    safety: dict = field(default_factory=dict)  # lower, upper, max_velocity, max_step (scalars or per joint)
    link: dict = field(default_factory=dict)  # extra LinkConfig fields (timeout_s, watchdog_ms, read_mode, ...)

    @property
    def simulated(self) -> bool:
        return self.port == "@sim"


@dataclass(frozen=True)
class RatesConfig:
    control_hz: float = 100.0  # command streaming rate (the controller's)
    action_hz: float = 10.0  # spacing of the policy's actions (the training data's control rate)
    camera_max_age_s: float = 0.2  # a frame older than this is not used for inference
    state_every: int = 1  # read the arm state every N ticks
    realtime_priority: int = 50  # SCHED_FIFO priority of the control thread (1..99; 0 = normal scheduling)


@dataclass(frozen=True)
class ChunkingConfig:
    replan: Optional[int] = None  # default: the embodiment's (LIBERO 10, RoboTwin 8)
    blend: str = "crossfade"
    blend_s: float = 0.1
    ensemble_m: float = 0.1


@dataclass(frozen=True)
class FaultConfig:
    torque: str = "hold"  # on a fault: "hold" (keep torque, hold position) or "off"
    torque_on_stop: str = "hold"  # on a normal stop / SIGINT
    dump_dir: str = "faults"
    dump_seconds: float = 5.0
    inference_timeout_s: float = 5.0  # no chunk for this long while one was requested -> fault
    camera_timeout_s: float = 2.0  # no fresh frame for this long -> fault
    max_stale_s: Optional[float] = None  # arm state older than this -> bus fault (default: stale_budget())

    def stale_budget(self, rates: "RatesConfig") -> float:
        """The staleness budget in seconds: `max_stale_s`, or by default 5 state reads (5 control periods times
        `rates.state_every`), at least 100 ms. A stale state cannot run the arm away (every command stays within
        max_step of the last state read); it only delays the reaction to what the arm really did. 100 ms rides
        through the host's own scheduling hiccups: on a 2-core host shared with a 5 GB export, 1 % lost + 1 %
        corrupt replies left the state up to 81 ms old (7 of 20 runs stopped at 50 ms, scripts/bus_fault_campaign.py);
        the Dynamixel bus watchdog defaults to 100 ms too."""
        if self.max_stale_s is not None:
            return self.max_stale_s
        return max(0.1, 5 * rates.state_every / rates.control_hz)


@dataclass(frozen=True)
class RunConfig:
    source: str
    instruction: str
    policy: PolicyConfig
    cameras: tuple
    arms: tuple
    rates: RatesConfig = RatesConfig()
    chunking: ChunkingConfig = ChunkingConfig()
    fault: FaultConfig = FaultConfig()
    name: str = ""


def _index_list(f: _Fields, key: str) -> Optional[tuple]:
    v = f.get(key, None, kind=list)
    if v is None:
        return None
    if not v or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v):
        raise f.err(key, f"must be a list of non-negative integers, got {v!r}")
    return tuple(v)


def _limit(f: _Fields, key: str) -> Any:
    v = f.get(key, None)
    if v is None:
        return None
    vals = v if isinstance(v, list) else [v]
    if not vals or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in vals):
        raise f.err(key, f"must be a number or a list of numbers (one per joint), got {v!r}")
    return [float(x) for x in vals] if isinstance(v, list) else float(v)


def _scale(f: _Fields, key: str, default: float):
    v = _limit(f, key)
    return default if v is None else tuple(v) if isinstance(v, list) else v


def _camera(d: Any, i: int, source: str, base: Path) -> CameraConfig:
    f = _Fields(d, f"cameras[{i}]", source)
    kind = f.get("kind", kind=str, choices=CAMERA_KINDS, example="realsense")
    slot = f.get("slot", kind=str, example="agentview")
    intr, he = f.path("intrinsics", base), f.path("handeye", base)
    device = {k: v for k, v in f.data.items() if k not in ("kind", "slot", "intrinsics", "handeye")}
    f.used.update(device)
    f.done()
    try:  # the drivers' own config classes validate the device fields
        if kind == "realsense":
            from drivers.camera.realsense import RealSenseConfig

            if device.get("playback_file"):
                device["playback_file"] = str((base / device["playback_file"]).expanduser())
            RealSenseConfig.from_dict(device)
        elif kind == "task":
            from .task.camera import TaskCameraConfig

            TaskCameraConfig.from_dict(device)
        else:
            from drivers.camera.sim import SimCameraConfig

            SimCameraConfig.from_dict(device)
    except ValueError as exc:  # drivers.errors.ConfigError is a ValueError
        raise ConfigError(f"{source}: `cameras[{i}]` ({kind}): {exc}") from None
    return CameraConfig(kind, slot, device, intr, he)


def _arm(d: Any, i: int, source: str, base: Path) -> ArmConfig:
    f = _Fields(d, f"arms[{i}]", source)
    protocol = f.get("protocol", kind=str, choices=PROTOCOLS, example="dynamixel")
    port = f.get("port", kind=str, example="/dev/ttyUSB0 (or @sim for a simulated controller)")
    ids = f.get("ids", kind=list, example="[1, 2, 3, 4, 5, 6]")
    if not ids or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 252 for x in ids) \
            or len(set(ids)) != len(ids):
        raise f.err("ids", f"must be a list of distinct servo ids 0..252, got {ids!r}")
    baud = f.get("baudrate", 1_000_000, kind=int)
    calibration = f.path("calibration", base)
    sf = _Fields(f.get("safety", {}), f"arms[{i}].safety", source)
    safety = {k: _limit(sf, k) for k in ("lower", "upper", "max_velocity", "max_step")}
    safety["on_out_of_range"] = sf.get("on_out_of_range", None, kind=str, choices=("fault", "clip"))
    safety["range_margin"] = sf.get("range_margin", None, kind=float, minimum=0.0, maximum=1.0)
    sf.done()
    for k, v in safety.items():
        if isinstance(v, list) and len(v) != len(ids):
            raise sf.err(k, f"has {len(v)} values for {len(ids)} joints (ids {ids}); give one per joint or a scalar")
        if k in ("max_velocity", "max_step") and v is not None and min(v if isinstance(v, list) else [v]) <= 0:
            raise sf.err(k, "must be > 0")
        if k in ("max_velocity", "max_step") and v is not None:
            from drivers.arm.safety import MAX_STEP_LIMIT, MAX_VELOCITY_LIMIT

            cap, unit, usual = ((MAX_STEP_LIMIT, "rad per command", "0.05-0.2") if k == "max_step"
                                else (MAX_VELOCITY_LIMIT, "rad/s", "1-3"))
            if max(v if isinstance(v, list) else [v]) > cap:
                raise sf.err(k, f"is {v!r}: more than {cap:g} {unit} is no limit at all (a policy error would reach "
                                f"the arm at full speed); use what the arm may really do ({usual} {unit} is usual)")
    link = f.get("link", {}, kind=dict)
    f.done()
    try:
        from drivers.arm.base import BAUDRATES
    except ImportError:  # pragma: no cover - drivers ship with the package
        BAUDRATES = (baud,)
    if baud not in BAUDRATES:
        raise f.err("baudrate", f"{baud} is not supported; use one of {list(BAUDRATES)}")
    return ArmConfig(protocol, port, tuple(ids), baud, calibration, {k: v for k, v in safety.items() if v is not None}, link)


def from_dict(data: Any, source: str = "<config>", base: Path | None = None) -> RunConfig:
    """Validate a parsed YAML document; relative paths resolve against `base` (the file's directory)."""
    base = Path(base) if base is not None else Path.cwd()
    top = _Fields(data, "", source)
    name = top.get("name", "", kind=str)
    instruction = top.get("instruction", kind=str, example='"pick up the red block"')
    if not instruction.strip():
        raise top.err("instruction", "is empty; write the task in words")
    pf = _Fields(top.get("policy", kind=dict, example="{backend: onnxruntime, engines: /opt/engines}"), "policy", source)
    backend = pf.get("backend", "onnxruntime", kind=str, choices=BACKENDS)
    engines, checkpoint = pf.path("engines", base), pf.path("checkpoint", base)
    if backend == "torch" and not checkpoint:
        raise pf.err("checkpoint", "is required with backend torch (a release directory)")
    if backend not in ("torch", "remote") and not engines:
        raise pf.err("engines", f"is required with backend {backend} (a directory written by `imagewam-edge export`)")
    fallback = pf.get("fallback", None, kind=str, choices=FALLBACKS)
    url = pf.get("url", None, kind=str, example="127.0.0.1:8001")
    timeout_s = pf.get("timeout_s", 2.0, kind=float, minimum=0.01, maximum=600.0)
    if backend == "remote":
        if not url or not REMOTE_URL.fullmatch(url):
            raise pf.err("url", f"must be host:port of the policy server's gRPC endpoint with backend remote, got "
                                f"{url!r}; e.g. `policy.url: 127.0.0.1:8001` (`imagewam-edge serve` prints it)")
        if fallback:
            raise pf.err("fallback", "is for engine backends: with backend remote the server runs the policy; "
                                     "remove `policy.fallback`")
    elif url is not None or "timeout_s" in pf.data:
        raise pf.err("url" if url is not None else "timeout_s",
                     f"applies to backend remote (a policy server); backend {backend} runs here: remove it")
    if fallback and backend == "torch":
        raise pf.err("fallback", "is for engine backends (tensorrt, onnxruntime): backend torch has nothing to fall "
                                 "back from; remove `policy.fallback`")
    if fallback and not checkpoint:
        raise pf.err("checkpoint", f"is required with `policy.fallback: {fallback}` (the release directory the torch "
                                   "backend runs when the engines cannot be loaded)")
    device = pf.get("device", None, kind=str, example="cuda")
    if device is not None and not re.fullmatch(TORCH_DEVICE, device):
        raise pf.err("device", f"must be cpu, cuda or cuda:N, got {device!r}")
    compile_ = pf.get("compile", False, kind=bool)
    if (device is not None or compile_) and backend != "torch" and not fallback:
        raise pf.err("device" if device is not None else "compile",
                     f"applies to the torch backend; backend {backend} runs its engines where they were built. Use "
                     "`backend: torch` (with `checkpoint`), or add `fallback: torch` for the torch backend as fallback")
    policy = PolicyConfig(backend, engines, checkpoint, pf.path("prompt_cache", base),
                          pf.get("steps", None, kind=int, minimum=1, maximum=100), pf.get("threads", 0, kind=int, minimum=0),
                          pf.get("action_mode", "absolute", kind=str, choices=ACTION_MODES),
                          _index_list(pf, "action_indices"), _index_list(pf, "state_indices"),
                          device=device, compile=compile_, fallback=fallback, url=url, timeout_s=timeout_s,
                          action_scale=_scale(pf, "action_scale", 1.0), action_offset=_scale(pf, "action_offset", 0.0))
    pf.done()
    cams = top.get("cameras", kind=list, example="[{kind: realsense, slot: agentview, serial: '123456789'}]")
    if not cams:
        raise top.err("cameras", "is empty; list one camera per canvas slot")
    cameras = tuple(_camera(c, i, source, base) for i, c in enumerate(cams))
    slots = [c.slot for c in cameras]
    if len(set(slots)) != len(slots):
        raise top.err("cameras", f"fill the same canvas slot twice: {slots}")
    arms_raw = top.get("arms", kind=list, example="[{protocol: dynamixel, port: /dev/ttyUSB0, ids: [1, 2, 3]}]")
    if not 1 <= len(arms_raw) <= 2:
        raise top.err("arms", f"must list one or two arm links, got {len(arms_raw)}")
    arms = tuple(_arm(a, i, source, base) for i, a in enumerate(arms_raw))
    rf = _Fields(top.get("rates", {}), "rates", source)
    rates = RatesConfig(rf.get("control_hz", 100.0, kind=float, minimum=1.0, maximum=1000.0),
                        rf.get("action_hz", 10.0, kind=float, minimum=0.5, maximum=1000.0),
                        rf.get("camera_max_age_s", 0.2, kind=float, minimum=0.001, maximum=10.0),
                        rf.get("state_every", 1, kind=int, minimum=1, maximum=1000),
                        rf.get("realtime_priority", 50, kind=int, minimum=0, maximum=99))
    rf.done()
    cf = _Fields(top.get("chunking", {}), "chunking", source)
    chunking = ChunkingConfig(cf.get("replan", None, kind=int, minimum=1), cf.get("blend", "crossfade", kind=str, choices=BLENDS),
                              cf.get("blend_s", 0.1, kind=float, minimum=0.0, maximum=5.0),
                              cf.get("ensemble_m", 0.1, kind=float, minimum=-10.0, maximum=10.0))
    cf.done()
    ff = _Fields(top.get("fault", {}), "fault", source)
    fault = FaultConfig(ff.get("torque", "hold", kind=str, choices=ON_FAULT_TORQUE),
                        ff.get("torque_on_stop", "hold", kind=str, choices=ON_FAULT_TORQUE),
                        str(Path(ff.get("dump_dir", "faults", kind=str)).expanduser()),  # relative: to the working dir
                        ff.get("dump_seconds", 5.0, kind=float, minimum=0.1, maximum=600.0),
                        ff.get("inference_timeout_s", 5.0, kind=float, minimum=0.05, maximum=600.0),
                        ff.get("camera_timeout_s", 2.0, kind=float, minimum=0.05, maximum=600.0),
                        ff.get("max_stale_s", None, kind=float, minimum=0.001, maximum=10.0))
    ff.done()
    if fault.max_stale_s is not None and fault.max_stale_s < 2 * rates.state_every / rates.control_hz:
        raise ff.err("max_stale_s", f"is {fault.max_stale_s} s, less than two state reads ({rates.state_every} / "
                     f"{rates.control_hz:g} Hz each): one lost reply would stop the robot. Use at least "
                     f"{2 * rates.state_every / rates.control_hz:g} s, or leave it out for the default")
    top.done()
    return RunConfig(source, instruction.strip(), policy, cameras, arms, rates, chunking, fault, name)


def from_yaml(path: str | Path) -> RunConfig:
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; start from an example in {CONFIG_DIR} "
                          f"({', '.join(sorted(p.name for p in CONFIG_DIR.glob('*.yaml')))})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    return from_dict(data, str(path), path.resolve().parent)


def example_configs() -> list[Path]:
    return sorted(CONFIG_DIR.glob("*.yaml"))
