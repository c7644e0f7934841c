"""`run --config FILE`: one validated YAML file for the whole robot (cameras, policy, prompt cache, calibration
files, one or two arm links, rates, chunking, safety limits, fault handling). Every error names the file, the
field (`arms[0].baudrate`) and the fix. Example files per supported setup: edge/configs/*.yaml.

Pure parsing: nothing here opens a device or imports torch."""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from .errors import ConfigError
from .strict import FieldError, build, setting

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


@dataclass(frozen=True)
class CameraConfig:
    kind: str = setting(choices=CAMERA_KINDS, example="realsense")  # realsense | sim | task
    slot: str = setting(example="agentview")  # canvas slot it fills (libero: agentview, wrist; robotwin: cam_high, ...)
    intrinsics: Optional[str] = setting(None, path=True)  # calibration file checked at start (serial and size)
    handeye: Optional[str] = setting(None, path=True)
    device: dict = setting(rest=True)  # every other key: RealSenseConfig / SimCameraConfig / TaskCameraConfig fields


@dataclass(frozen=True)
class PolicyConfig:
    backend: str = setting("onnxruntime", choices=BACKENDS)
    engines: Optional[str] = setting(None, path=True)  # "@default": the embedded default's cached engines
    checkpoint: Optional[str] = setting(None, path=True)  # torch backend (workstation)
    prompt_cache: Optional[str] = setting(None, path=True)
    steps: Optional[int] = setting(None, minimum=1, maximum=100)
    threads: int = setting(0, minimum=0)
    # absolute joint targets, or deltas added to the state of the observation
    action_mode: str = setting("absolute", choices=ACTION_MODES)
    action_indices: Optional[tuple[int, ...]] = setting(None, minimum=0)  # action dims -> joints in arm order
    # (default: all, in order)
    state_indices: Optional[tuple[int, ...]] = setting(None, minimum=0)  # arm joints -> policy state (default: all)
    # torch backend device: cpu | cuda | cuda:N (None: cpu for backend torch, cuda for the fallback)
    device: Optional[str] = setting(None, example="cuda")
    compile: bool = False  # torch backend: torch.compile inside the CUDA graphs
    # "torch": the checkpoint on the torch backend when the engines cannot be loaded
    fallback: Optional[str] = setting(None, choices=FALLBACKS)
    # backend remote: host:port of the Triton gRPC endpoint (`imagewam-edge serve`)
    url: Optional[str] = setting(None, example="127.0.0.1:8001")
    timeout_s: float = setting(2.0, minimum=0.01, maximum=600.0)  # backend remote: deadline of one step's request
    # policy action units -> robot units per joint, arms in order: q = scale * action + offset (a number, or one per
    # joint; edge.transforms.JointMap, the policy's output transform)
    action_scale: float | tuple[float, ...] = 1.0
    action_offset: float | tuple[float, ...] = 0.0

    def __post_init__(self):
        for key in ("action_indices", "state_indices"):
            if getattr(self, key) is not None and not getattr(self, key):
                raise FieldError(self, key, "must be a non-empty list of non-negative integers, got []")
        if self.device is not None and not re.fullmatch(TORCH_DEVICE, self.device):
            raise FieldError(self, "device", f"must be cpu, cuda or cuda:N, got {self.device!r}")

    def torch_device(self) -> str:
        """Where the torch backend runs: `device`, else cpu for backend torch and cuda for the fallback."""
        return self.device or ("cpu" if self.backend == "torch" else "cuda")


@dataclass(frozen=True)
class ArmConfig:
    protocol: str = setting(choices=PROTOCOLS, example="dynamixel")
    # "@sim": start a simulated controller (own process, pty) and use its port
    port: str = setting(example="/dev/ttyUSB0 (or @sim for a simulated controller)")
    ids: tuple[int, ...] = setting(example="[1, 2, 3, 4, 5, 6]")
    baudrate: int = 1_000_000
    calibration: Optional[str] = setting(None, path=True)  # JointMapping YAML ({joints: [...]})
    # the limits given (drivers.arm.safety.SafetyConfig fields): lower, upper, max_velocity, max_step (scalars or per
    # joint), on_out_of_range, range_margin; what is left out takes SafetyConfig's defaults
    safety: dict = field(default_factory=dict)
    link: dict = field(default_factory=dict)  # extra LinkConfig fields (timeout_s, watchdog_ms, read_mode, ...)

    def __post_init__(self):
        ids = self.ids
        if not ids or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 252 for x in ids) \
                or len(set(ids)) != len(ids):
            raise FieldError(self, "ids", f"must be a list of distinct servo ids 0..252, got {list(ids)!r}")
        try:
            from drivers.arm.base import BAUDRATES
        except ImportError:  # pragma: no cover - drivers ship with the package
            BAUDRATES = (self.baudrate,)
        if self.baudrate not in BAUDRATES:
            raise FieldError(self, "baudrate", f"{self.baudrate} is not supported; use one of {list(BAUDRATES)}")

    @property
    def simulated(self) -> bool:
        return self.port == "@sim"


@dataclass(frozen=True)
class RatesConfig:
    control_hz: float = setting(100.0, minimum=1.0, maximum=1000.0)  # command streaming rate (the controller's)
    # spacing of the policy's actions (the training data's control rate)
    action_hz: float = setting(10.0, minimum=0.5, maximum=1000.0)
    camera_max_age_s: float = setting(0.2, minimum=0.001, maximum=10.0)  # an older frame is not used for inference
    state_every: int = setting(1, minimum=1, maximum=1000)  # read the arm state every N ticks
    # SCHED_FIFO priority of the control thread (1..99; 0 = normal scheduling)
    realtime_priority: int = setting(50, minimum=0, maximum=99)


@dataclass(frozen=True)
class ChunkingConfig:
    replan: Optional[int] = setting(None, minimum=1)  # default: the embodiment's (LIBERO 10, RoboTwin 8)
    blend: str = setting("crossfade", choices=BLENDS)
    blend_s: float = setting(0.1, minimum=0.0, maximum=5.0)
    ensemble_m: float = setting(0.1, minimum=-10.0, maximum=10.0)


@dataclass(frozen=True)
class FaultConfig:
    # on a fault: "hold" (keep torque, hold position) or "off"
    torque: str = setting("hold", choices=ON_FAULT_TORQUE)
    torque_on_stop: str = setting("hold", choices=ON_FAULT_TORQUE)  # on a normal stop / SIGINT
    dump_dir: str = "faults"  # relative: to the working directory
    dump_seconds: float = setting(5.0, minimum=0.1, maximum=600.0)
    # no chunk for this long while one was requested -> fault
    inference_timeout_s: float = setting(5.0, minimum=0.05, maximum=600.0)
    camera_timeout_s: float = setting(2.0, minimum=0.05, maximum=600.0)  # no fresh frame for this long -> fault
    # arm state older than this -> bus fault (default: stale_budget())
    max_stale_s: Optional[float] = setting(None, minimum=0.001, maximum=10.0)

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


@dataclass(frozen=True)
class _Document:
    """The file's top level as written; `from_dict` checks the sections against each other into a RunConfig."""

    instruction: str = setting(example='"pick up the red block"')
    policy: PolicyConfig = setting(example="{backend: onnxruntime, engines: /opt/engines}")
    cameras: list = setting(example="[{kind: realsense, slot: agentview, serial: '123456789'}]")
    arms: list = setting(example="[{protocol: dynamixel, port: /dev/ttyUSB0, ids: [1, 2, 3]}]")
    rates: RatesConfig = RatesConfig()
    chunking: ChunkingConfig = ChunkingConfig()
    fault: FaultConfig = FaultConfig()
    name: str = ""


def _camera(d: Any, i: int, source: str, base: Path) -> CameraConfig:
    cam = build(CameraConfig, d, source, f"cameras[{i}]", base)
    device = dict(cam.device)
    where = f"cameras[{i}]"
    # the drivers' own config classes validate the device fields
    if cam.kind == "realsense":
        from drivers.camera.realsense import RealSenseConfig

        if device.get("playback_file"):
            device["playback_file"] = str((base / device["playback_file"]).expanduser())
        RealSenseConfig.from_dict(device, source, where)
    elif cam.kind == "task":
        from .task.camera import TaskCameraConfig

        TaskCameraConfig.from_dict(device, source, where)
    else:
        from drivers.camera.sim import SimCameraConfig

        SimCameraConfig.from_dict(device, source, where)
    return replace(cam, device=device)


def _arm(d: Any, i: int, source: str, base: Path) -> ArmConfig:
    from drivers.arm.safety import MAX_STEP_LIMIT, MAX_VELOCITY_LIMIT, SafetyConfig

    where = f"arms[{i}]"
    arm = build(ArmConfig, d, source, where, base)
    raw = arm.safety
    sc = build(SafetyConfig, raw, source, f"{where}.safety")
    safety = {k: getattr(sc, k) for k in raw if raw[k] is not None}  # the limits given; the rest: SafetyConfig's

    def err(k: str, msg: str) -> ConfigError:
        return ConfigError(f"{source}: field `{where}.safety.{k}` {msg}")

    n = len(arm.ids)
    for k, v in safety.items():
        if isinstance(v, tuple) and len(v) != n:
            raise err(k, f"has {len(v)} values for {n} joints (ids {list(arm.ids)}); give one per joint or a scalar")
        if k in ("max_velocity", "max_step"):
            vals = v if isinstance(v, tuple) else (v,)
            if min(vals) <= 0:
                raise err(k, "must be > 0")
            cap, unit, usual = ((MAX_STEP_LIMIT, "rad per command", "0.05-0.2") if k == "max_step"
                                else (MAX_VELOCITY_LIMIT, "rad/s", "1-3"))
            if max(vals) > cap:
                raise err(k, f"is {v!r}: more than {cap:g} {unit} is no limit at all (a policy error would reach the "
                             f"arm at full speed); use what the arm may really do ({usual} {unit} is usual)")
    return replace(arm, safety=safety)


def _check_policy(policy: PolicyConfig, given: dict, source: str) -> None:
    """The policy section's fields against each other (which backend needs what)."""

    def err(k: str, msg: str) -> ConfigError:
        return ConfigError(f"{source}: field `policy.{k}` {msg}")

    backend, fallback = policy.backend, policy.fallback
    if backend == "torch" and not policy.checkpoint:
        raise err("checkpoint", "is required with backend torch (a release directory)")
    if backend not in ("torch", "remote") and not policy.engines:
        raise err("engines", f"is required with backend {backend} (a directory written by `imagewam-edge export`)")
    if backend == "remote":
        if not policy.url or not REMOTE_URL.fullmatch(policy.url):
            raise err("url", f"must be host:port of the policy server's gRPC endpoint with backend remote, got "
                             f"{policy.url!r}; e.g. `policy.url: 127.0.0.1:8001` (`imagewam-edge serve` prints it)")
        if fallback:
            raise err("fallback", "is for engine backends: with backend remote the server runs the policy; "
                                  "remove `policy.fallback`")
    elif policy.url is not None or "timeout_s" in given:
        raise err("url" if policy.url is not None else "timeout_s",
                  f"applies to backend remote (a policy server); backend {backend} runs here: remove it")
    if fallback and backend == "torch":
        raise err("fallback", "is for engine backends (tensorrt, onnxruntime): backend torch has nothing to fall "
                              "back from; remove `policy.fallback`")
    if fallback and not policy.checkpoint:
        raise err("checkpoint", f"is required with `policy.fallback: {fallback}` (the release directory the torch "
                                "backend runs when the engines cannot be loaded)")
    if (policy.device is not None or policy.compile) and backend != "torch" and not fallback:
        raise err("device" if policy.device is not None else "compile",
                  f"applies to the torch backend; backend {backend} runs its engines where they were built. Use "
                  "`backend: torch` (with `checkpoint`), or add `fallback: torch` for the torch backend as fallback")


def from_dict(data: Any, source: str = "<config>", base: Path | None = None) -> RunConfig:
    """Validate a parsed YAML document; relative paths resolve against `base` (the file's directory)."""
    base = Path(base) if base is not None else Path.cwd()
    doc = build(_Document, data, source, "", base)

    def err(k: str, msg: str) -> ConfigError:
        return ConfigError(f"{source}: field `{k}` {msg}")

    if not doc.instruction.strip():
        raise err("instruction", "is empty; write the task in words")
    _check_policy(doc.policy, (data or {}).get("policy") or {}, source)
    if not doc.cameras:
        raise err("cameras", "is empty; list one camera per canvas slot")
    cameras = tuple(_camera(c, i, source, base) for i, c in enumerate(doc.cameras))
    slots = [c.slot for c in cameras]
    if len(set(slots)) != len(slots):
        raise err("cameras", f"fill the same canvas slot twice: {slots}")
    if not 1 <= len(doc.arms) <= 2:
        raise err("arms", f"must list one or two arm links, got {len(doc.arms)}")
    arms = tuple(_arm(a, i, source, base) for i, a in enumerate(doc.arms))
    rates, fault = doc.rates, replace(doc.fault, dump_dir=str(Path(doc.fault.dump_dir).expanduser()))
    if fault.max_stale_s is not None and fault.max_stale_s < 2 * rates.state_every / rates.control_hz:
        raise err("fault.max_stale_s", f"is {fault.max_stale_s} s, less than two state reads ({rates.state_every} / "
                  f"{rates.control_hz:g} Hz each): one lost reply would stop the robot. Use at least "
                  f"{2 * rates.state_every / rates.control_hz:g} s, or leave it out for the default")
    return RunConfig(source, doc.instruction.strip(), doc.policy, cameras, arms, rates, doc.chunking, fault, doc.name)


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
