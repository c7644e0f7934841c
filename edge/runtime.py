"""`run`: a validated RunConfig -> policy, cameras, arm links (and simulated controllers) -> ControlLoop -> summary.

Everything opened here is closed by one ExitStack in reverse order (cameras stopped, links disconnected with the
configured torque, simulators terminated), also after a fault or Ctrl-C. The engines path imports no torch."""
from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .arm_links import make_link  # noqa: F401  (re-exported)
from .config import CameraConfig, PolicyConfig, RunConfig
from .errors import ConfigError, ImageWAMEdgeError

log = logging.getLogger(__name__)


def load_policy(pcfg: PolicyConfig, source: str, progress: Callable[[str], None] = lambda s: None):
    if pcfg.backend == "remote":  # a Triton server computes it (edge/serve); nothing is loaded here
        from .serve.client import connect

        return connect(pcfg.url, pcfg.timeout_s, progress=progress)
    if pcfg.backend == "torch":
        return load_torch_policy(pcfg, pcfg.torch_device())
    from .loader import PolicySource, load_policy as load

    engines = pcfg.engines
    if engines == "@default":
        from .default import ensure_default_engines

        engines = str(ensure_default_engines(progress=progress))
    elif engines and engines.startswith("@"):
        raise ConfigError(f"{source}: field `policy.engines` {engines!r}: the only special value is @default")
    try:
        return load(PolicySource(engines=engines, backend=pcfg.backend, prompt_cache=pcfg.prompt_cache,
                                 steps=pcfg.steps, threads=pcfg.threads))
    except ENGINE_LOAD_ERRORS as exc:
        if not pcfg.fallback:
            raise
        device = pcfg.torch_device()
        log.error("%s: the %s engines in %s cannot be loaded (%s: %s); falling back to the torch backend on %s with "
                  "the checkpoint %s (policy.fallback: %s)", source, pcfg.backend, engines, type(exc).__name__, exc,
                  device, pcfg.checkpoint, pcfg.fallback)
        progress(f"{pcfg.backend} engines not loaded ({type(exc).__name__}); fallback: torch on {device}")
        return load_torch_policy(pcfg, device)


# what a failed engine load raises: our typed errors (missing tensorrt / cuda-python, manifest mismatch, no GPU) and
# what the runtimes themselves raise for an engine they cannot deserialize
ENGINE_LOAD_ERRORS = (ImageWAMEdgeError, ImportError, OSError, RuntimeError)


def load_torch_policy(pcfg: PolicyConfig, device: str):
    from .loader import PolicySource, load_policy

    return load_policy(PolicySource(checkpoint=pcfg.checkpoint, backend="torch", prompt_cache=pcfg.prompt_cache,
                                    steps=pcfg.steps or 10, device=device, compile=pcfg.compile))


def _task_environment(device: dict):
    from .task.camera import TaskCamera, TaskCameraConfig

    return TaskCamera(TaskCameraConfig.from_dict(dict(device)))


# camera kinds that declare a simulated environment (edge.task.environment.Environment): kind -> its maker, called
# with the camera entry's device fields. A run drives the environment its config declares, at most one; a setup of
# real cameras has none.
ENVIRONMENTS: dict[str, Callable[[dict], object]] = {"task": _task_environment}


def open_environment(cfg: RunConfig):
    """The environment the config declares (a camera of a kind in ENVIRONMENTS), checked against the interface
    (ConfigError naming the camera entry and what the object lacks), or None."""
    from .task.environment import check_environment

    declared = [(i, c) for i, c in enumerate(cfg.cameras) if c.kind in ENVIRONMENTS]
    if len(declared) > 1:
        raise ConfigError(f"{cfg.source}: field `cameras`: entries {[i for i, _ in declared]} each declare an "
                          "environment (kind task); a run drives one scene: give one camera of kind task")
    if not declared:
        return None
    i, cc = declared[0]
    return check_environment(ENVIRONMENTS[cc.kind](cc.device), f"{cfg.source}: `cameras[{i}]` (kind {cc.kind})")


def open_camera(cc: CameraConfig, i: int, source: str):
    if cc.kind == "sim":
        from drivers.camera.sim import SimCamera, SimCameraConfig

        return SimCamera(SimCameraConfig.from_dict(dict(cc.device)))
    from drivers.camera.realsense import RealSenseCamera, RealSenseConfig

    return RealSenseCamera(RealSenseConfig.from_dict(dict(cc.device)))


def check_calibration(cc: CameraConfig, i: int, source: str) -> dict:
    """Load the camera's calibration files (refused if made for another camera or resolution)."""
    out = {}
    if not (cc.intrinsics or cc.handeye):
        return out
    from calib.store import load_handeye, load_intrinsics

    serial = cc.device.get("serial")
    size = (cc.device.get("width", 640), cc.device.get("height", 480))
    if cc.intrinsics:
        out["intrinsics"] = load_intrinsics(cc.intrinsics, expect_serial=serial, expect_size=size)
    if cc.handeye:
        out["handeye"] = load_handeye(cc.handeye, expect_serial=serial)
    return out


def check_slots(cfg: RunConfig, policy) -> None:
    slots = [s.name for s in policy.canvas.slots]
    have = [c.slot for c in cfg.cameras]
    if sorted(have) != sorted(slots):
        raise ConfigError(f"{cfg.source}: field `cameras` fills slots {have} but the model's canvas "
                          f"{policy.canvas.name!r} has slots {slots}: give exactly one camera per slot")


def run_config(cfg: RunConfig, seconds: Optional[float] = None, record: Optional[str] = None,
               progress: Callable[[str], None] = lambda s: None, stop=None, policy=None,
               ignore_signals_after: bool = False) -> dict:
    """Open everything, run the loop, close everything; returns the summary. `policy` overrides the config's
    (tests wrap a policy, e.g. to make it slow). `ignore_signals_after`: leave SIGINT/SIGTERM/SIGHUP ignored when
    it returns (a command line about to write the summary and exit).

    SIGINT, SIGTERM and SIGHUP stop it safely at any point: during set-up the set-up unwinds (a summary with
    `stopped_by` and `during: setup`), during the loop the loop's safe stop runs. Every servo ends in the
    configured state, each id attempted even when one fails: `fault.torque` after a fault or a failed set-up,
    `fault.torque_on_stop` after a normal stop or a signal."""
    from drivers.arm.base import MultiArm

    from .loop import ControlLoop, check_dump_dir, robot_policy
    from .stop_signals import StopRequested, StopSignals

    t_setup = time.monotonic()
    check_dump_dir(cfg.fault.dump_dir)
    signals = StopSignals(stop, raising=True, ignore_after=ignore_signals_after)
    links: list = []
    # the stop state for servos the loop did not handle: fault.torque after a failed set-up; "enabled" once this
    # run switched torque on (before that, a stop during set-up leaves the servos as they were)
    outcome = {"mode": cfg.fault.torque, "handled": False, "enabled": False}
    summary: dict = {}
    with signals, contextlib.ExitStack() as stack:
        stack.callback(_close_links, links, outcome)  # runs last: closing only
        try:
            summary = _setup_and_run(cfg, seconds, record, progress, stack, links, outcome, signals, policy,
                                     MultiArm, ControlLoop, robot_policy)
        except BaseException as exc:
            signals.raising = False  # from here no signal may interrupt the torque handling
            if isinstance(exc, StopRequested):  # a signal during set-up: the stop (not the fault) torque state
                outcome["mode"] = cfg.fault.torque_on_stop
            _stop_torque(links, outcome)  # before anything else unwinds (cameras, simulators, the backend)
            if not isinstance(exc, StopRequested):
                raise
            summary = {"stopped_by": signals.name, "during": "setup", "fault": None, "steps": 0,
                       "torque_mode": outcome["mode"]}
        else:
            _stop_torque(links, outcome)  # only when the loop did not (it always does; kept for safety)
    if summary.get("during") == "setup":
        summary["torque"] = {l.config.port: {str(k): v for k, v in l.torque_report.items()} for l in links}
    summary["config"] = cfg.source
    summary["setup_s"] = round(time.monotonic() - t_setup - summary.get("duration_s", 0.0), 2)
    return summary


def _stop_torque(links: list, outcome: dict) -> None:
    """Unless the loop's safe stop already did: the configured torque on every servo (each id attempted, read
    back). "hold" switches torque on only when this run had switched it on (some servos may have failed to):
    a set-up stopped before that point leaves the servos as it found them."""
    if outcome["handled"]:
        return
    outcome["handled"] = True
    for link in links:
        if not link.is_connected or (outcome["mode"] != "off" and not outcome["enabled"]):
            continue
        report = link.set_torque_all(outcome["mode"] != "off")
        log.warning("stopped outside the loop: torque %s on %s: %s", outcome["mode"], link.config.port,
                    ", ".join(f"id {i} {v}" for i, v in report.items()))


def _close_links(links: list, outcome: dict) -> None:
    _stop_torque(links, outcome)  # a no-op after the paths above; here for an exit that bypassed them
    for link in links:
        try:
            link.disconnect(torque_off=False)
        except Exception as exc:
            log.warning("closing %s failed: %s", link.config.port, exc)


def _setup_and_run(cfg, seconds, record, progress, stack, links, outcome, signals, policy, MultiArm, ControlLoop,
                   robot_policy):
    if policy is None:
        progress(f"loading the policy ({cfg.policy.backend})")
        policy = load_policy(cfg.policy, cfg.source, progress)
    stack.callback(lambda: getattr(getattr(policy, "backend", None), "close", lambda: None)())
    policy.text(cfg.instruction)  # a missing prompt-cache entry fails now, not in the loop
    calibration = {c.slot: check_calibration(c, i, cfg.source) for i, c in enumerate(cfg.cameras)}
    env = open_environment(cfg)  # before anything starts: an incomplete environment is refused here
    made = []
    for i, ac in enumerate(cfg.arms):
        port = ac.port
        if ac.simulated:
            from drivers.arm.sim import SimulatedController

            sim = SimulatedController(ac.protocol, ids=list(ac.ids), watchdog_ms=int(ac.link.get("watchdog_ms", 200)))
            port = sim.start()
            stack.callback(sim.stop)
            progress(f"simulated {ac.protocol} controller (own process) on {port}")
        made.append(make_link(ac, port, i, cfg.source))
    arm = MultiArm(made)
    check_slots(cfg, policy)
    spec = policy.spec
    robot = robot_policy(policy, cfg.policy, sum(arm.sizes), spec.state_dim, spec.action_dim, cfg.source)
    order = {s.name: k for k, s in enumerate(policy.canvas.slots)}
    cams_cfg = sorted(cfg.cameras, key=lambda c: order[c.slot])
    cameras = [env.camera if c.kind in ENVIRONMENTS else open_camera(c, i, cfg.source) for i, c in enumerate(cams_cfg)]
    links.extend(arm.links)  # from here on the teardown applies the stop state to every servo
    arm.connect()
    for cam in cameras:
        cam.connect()
        stack.callback(cam.disconnect)
    if env is not None:  # the toy task: its scene, the goal the instruction names, the arm where it is
        env.start_for_instruction(cfg.instruction, np.asarray(arm.read_state()))
    # warm-up: the first inference allocates buffers and is slow; do it before the clock starts (its joint commands
    # pass the output transform's checks: a policy that returns NaN is refused before torque is on)
    frames = [cam.read(timeout=5.0) for cam in cameras]
    robot.infer({"images": [f.color for f in frames], "joints": np.asarray(arm.read_state()),
                 "instruction": cfg.instruction})
    # torque on as late as possible: right before the loop, which arms the bus watchdog at once (a host that dies
    # during the warm-up must not leave the arm holding torque with no watchdog)
    outcome["enabled"] = True
    arm.torque(True)  # every link attempted, each goal := present first; a failure unwinds to the stop state
    writer = None
    if record:
        from .recording import RecordingWriter

        writer = RecordingWriter(record, canvas=policy.canvas.name, slots=[s.name for s in policy.canvas.slots],
                                 state_dim=policy.spec.state_dim, action_dim=policy.spec.action_dim,
                                 extra={"config": cfg.source, "control_hz": cfg.rates.control_hz,
                                        "action_hz": cfg.rates.action_hz})
        writer.start_episode(cfg.instruction, config=cfg.source)
    loop = ControlLoop(robot, cameras, arm, cfg.instruction, cfg.rates, cfg.chunking, cfg.fault, recorder=writer,
                       state_hooks=[env.observe_state] if env is not None else [])
    progress(f"running at {cfg.rates.control_hz:g} Hz" + (f" for {seconds:g} s" if seconds else " (Ctrl-C stops)"))
    signals.raising = False  # from here a signal only sets the event: the loop's safe stop runs, never interrupted
    summary = loop.run(seconds, stop=signals.event)
    outcome["handled"] = loop.torque_done is not None
    outcome["mode"] = cfg.fault.torque if summary["fault"] else cfg.fault.torque_on_stop
    if signals.name and summary["stopped_by"] in ("stop", "time"):
        summary["stopped_by"] = signals.name
    if env is not None:
        summary["task"] = env.status()
    summary["calibration"] = {k: sorted(v) for k, v in calibration.items() if v}
    if record:
        summary["record"] = str(record)
    return summary


def write_summary(summary: dict, path: str) -> None:
    from .atomic import write_text

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(summary, indent=1))
