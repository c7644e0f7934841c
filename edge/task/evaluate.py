"""Closed-loop evaluation on the toy task: success rate and episode length through the REAL control loop (the task
camera's capture thread, the simulated Dynamixel controller in its own process on a pty, the loop's inference
worker, chunk scheduler and safety checks), with the embedded default's rates, chunking and arm limits.

One setup serves every episode: the simulator process, the arm link, the camera and the policy are opened once;
per episode the arm is driven to the episode's start pose, the camera starts the episode, and a fresh ControlLoop
runs until the task camera reports success or `max_seconds` pass. `evaluate_kinematic` is the same task without
real time (the arm reaches every target exactly): deterministic and fast, for tests and quick checks."""
from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import ConfigError, ImageWAMEdgeError
from ..transforms import get_canvas, get_embodiment
from .world import TASK, TaskConfig, expert_chunk, make_episode, rollout

log = logging.getLogger(__name__)


class EvaluationError(ImageWAMEdgeError):
    """The evaluation could not run (the arm did not reach a start pose, the policy does not fit the task, ...)."""


@dataclass(frozen=True)
class ExpertSpec:
    """What a run reads of a policy's spec, for the expert: it takes and drives the task's joints."""

    state_dim: int
    action_dim: int
    horizon: int


class ExpertPolicy:
    """The scripted expert behind the policy contract (privileged: it reads the goal from the task camera's episode)."""

    def __init__(self, episode_of: Callable[[], object], task: TaskConfig = TASK, embodiment: str = "sim"):
        self.episode_of, self.task = episode_of, task
        self.spec = ExpertSpec(task.n_joints, task.n_joints, task.horizon)
        self.embodiment = get_embodiment(embodiment)
        self.canvas = get_canvas(self.embodiment.canvas)

    def text(self, instruction: str):
        return None

    def infer(self, obs: dict, noise=None, seed=None) -> dict:
        t = time.perf_counter()
        actions = expert_chunk(self.episode_of(), np.asarray(obs["state"], dtype=np.float64), self.task)
        ms = (time.perf_counter() - t) * 1e3
        return {"actions": actions.astype(np.float32), "actions_normalized": actions.astype(np.float32),
                "timings_ms": {"total": ms}, "step_ms": []}


def check_policy(policy, task: TaskConfig = TASK) -> None:
    spec = getattr(policy, "spec", None)
    if spec is not None and (spec.state_dim != task.n_joints or spec.action_dim != task.n_joints):
        raise ConfigError(f"the toy task drives a {task.n_joints}-joint arm; this policy takes a state of "
                          f"{spec.state_dim} and outputs {spec.action_dim} action dims: evaluate a checkpoint trained "
                          "on the task (scripts/train_toy.py; shipped in edge/assets/toy_checkpoint)")
    canvas = getattr(policy, "canvas", None)
    if canvas is not None and [s.name for s in canvas.slots] != ["main"]:
        raise ConfigError(f"the task camera fills one canvas slot 'main'; the policy's canvas {canvas.name!r} has "
                          f"{[s.name for s in canvas.slots]}")


def drive_to(arm, q_target: np.ndarray, period: float, tolerance: float = 0.01, timeout_s: float = 6.0) -> np.ndarray:
    """Stream `q_target` at the control period (the link's safety limits pace the motion) until the arm is within
    `tolerance` rad of it on every joint. Returns the reached state."""
    from drivers.errors import ArmLinkError

    deadline = time.monotonic() + timeout_s
    q = np.full_like(np.asarray(q_target, dtype=np.float64), np.nan)
    while True:
        try:
            q = np.asarray(arm.read_state(), dtype=np.float64)
            if np.max(np.abs(q - q_target)) <= tolerance:
                return q
            arm.write(q_target, dt=period)
        except ArmLinkError as exc:  # a missed reply on a busy machine: the link reopens on the next call
            log.warning("reset to the start pose: %s (retrying)", exc)
        if time.monotonic() > deadline:
            raise EvaluationError(f"the simulated arm did not reach the start pose within {timeout_s} s (at {q.round(3)}, "
                                  f"target {np.round(q_target, 3)}); check the arm's safety limits in the config")
        time.sleep(period)


def _running(results: list[dict], t_start: float) -> str:
    """'success k/n (p%) so far, T s elapsed': the running success rate of a long evaluation."""
    k = sum(1 for r in results if r["success"])
    return f"success {k}/{len(results)} ({100.0 * k / len(results):.0f}%) so far, {time.monotonic() - t_start:.0f} s elapsed"


def summarize(results: list[dict], task: TaskConfig) -> dict:
    n = len(results)
    ok = [r for r in results if r["success"]]
    seconds = [r["seconds"] if r["success"] else task.max_seconds for r in results]
    return {"episodes": n, "successes": len(ok), "success_rate": round(len(ok) / n, 4) if n else 0.0,
            "mean_episode_s": round(float(np.mean(seconds)), 3) if n else None,
            "mean_success_s": round(float(np.mean([r["seconds"] for r in ok])), 3) if ok else None,
            "faults": sum(1 for r in results if r.get("fault")), "max_seconds": task.max_seconds,
            "success_radius": task.success_radius, "hold_s": task.success_hold_s}


def evaluate(policy=None, episodes: int = 10, seed: int = 0, task: TaskConfig = TASK, config=None,
             fault_dir: Optional[str] = None, record: Optional[str] = None,
             progress: Callable[[str], None] = lambda s: None) -> dict:
    """Closed-loop evaluation through the real control loop. `policy` None: the scripted expert. `config`: a RunConfig
    for rates, chunking, arm and camera (default: the embedded default's). `record`: write every episode's
    observations there (edge/recording.py format: calibration data for `quantize`). Returns the summary with
    per-episode rows."""
    from drivers.arm.base import MultiArm
    from drivers.arm.sim import SimulatedController

    from ..config import from_yaml
    from ..config import DEFAULT_CONFIG
    from ..loop import ControlLoop, robot_policy
    from ..arm_links import make_link
    from .camera import TaskCamera, TaskCameraConfig

    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}")
    cfg = config or from_yaml(DEFAULT_CONFIG)
    cams = [c for c in cfg.cameras if c.kind == "task"]
    if len(cfg.arms) != 1 or len(cams) != 1:
        raise ConfigError(f"{cfg.source}: the task evaluation needs one arm and one camera of kind `task`")
    ac = cfg.arms[0]
    # a 200 ms reply timeout (the default config's is 50 ms): a busy evaluation machine must not end an episode
    ac = replace(ac, link={"timeout_s": 0.2, **ac.link})
    if len(ac.ids) != task.n_joints:
        raise ConfigError(f"{cfg.source}: the task drives {task.n_joints} joints, the arm lists {len(ac.ids)} ids")
    fault = replace(cfg.fault, dump_dir=fault_dir or str(Path(tempfile.gettempdir()) / "imagewam-eval-faults"))
    period = 1.0 / cfg.rates.control_hz
    results: list[dict] = []
    with contextlib.ExitStack() as stack:
        sim = SimulatedController(ac.protocol, ids=list(ac.ids))
        port = sim.start()
        stack.callback(sim.stop)
        arm = MultiArm([make_link(ac, port, 0, cfg.source)]).connect()
        stack.callback(lambda: [link.disconnect(torque_off=False) for link in arm.links])
        arm.torque(True)
        camera = TaskCamera(TaskCameraConfig.from_dict(dict(cams[0].device)), task).connect()
        stack.callback(camera.disconnect)
        policy = policy if policy is not None else ExpertPolicy(lambda: camera.episode, task)
        check_policy(policy, task)
        robot = robot_policy(policy, cfg.policy, task.n_joints, task.n_joints, task.n_joints, cfg.source)
        for text in {make_episode(seed + i, task).instruction for i in range(episodes)}:
            policy.text(text)  # a missing prompt-cache entry fails now
        writer = None
        if record:
            from ..recording import RecordingWriter

            writer = RecordingWriter(record, canvas=policy.canvas.name, slots=["main"], state_dim=task.n_joints,
                                     action_dim=task.n_joints, extra={"task": "toy-reach", "seed": seed,
                                                                      "control_hz": cfg.rates.control_hz,
                                                                      "action_hz": cfg.rates.action_hz})
        progress(f"simulated {ac.protocol} controller on {port}; {episodes} episodes from seed {seed} (up to "
                 f"{task.max_seconds:g} s each + the reset to the start pose)")
        t_start = time.monotonic()
        for i in range(episodes):
            ep = make_episode(seed + i, task)
            q = drive_to(arm, ep.start_joints(task), period)
            camera.observe_state(q)
            camera.set_episode(ep)
            t_set = time.monotonic()
            while camera.read(timeout=2.0).timestamp < t_set + 1.5 / camera.config.fps:
                pass  # a frame rendered after the episode started
            if i == 0:  # warm-up: the first inference allocates buffers
                robot.infer({"images": [camera.read_latest(1.0).color], "joints": q, "instruction": ep.instruction})
                camera.set_episode(ep)
            if writer is not None:
                writer.start_episode(ep.instruction, seed=ep.seed)
            loop = ControlLoop(robot, [camera], arm, ep.instruction, cfg.rates, cfg.chunking, fault, recorder=writer,
                               state_hooks=[camera.observe_state])
            s = loop.run(task.max_seconds, stop=camera.done)
            st = camera.status()
            row = {"seed": ep.seed, "instruction": ep.instruction, "success": bool(st["success"]),
                   "seconds": st["seconds"], "distance": st["distance"], "steps": s["steps"], "chunks": s["chunks"],
                   "overruns": s["overruns"], "fault": s["fault"]}
            results.append(row)
            progress(f"episode {i + 1}/{episodes} seed {ep.seed}: {'success' if row['success'] else 'failure'} "
                     f"after {row['seconds']:.2f} s ({ep.instruction}; distance {row['distance']}); "
                     + _running(results, t_start))
            if loop.stopped_by == "SIGINT":
                progress("interrupted")
                break
            if s["fault"]:  # counted as a failure and reported; the link reopens for the next episode
                log.warning("episode %d (seed %d): the control loop faulted: %s", i, ep.seed, s["fault"])
    out = summarize(results, task)
    out.update({"mode": "closed-loop", "seed": seed, "wall_s": round(time.monotonic() - t_start, 1) if results else 0.0,
                "control_hz": cfg.rates.control_hz,
                "action_hz": cfg.rates.action_hz, "results": results})
    return out


def evaluate_kinematic(policy=None, episodes: int = 10, seed: int = 0, task: TaskConfig = TASK,
                       replan: Optional[int] = None, progress: Callable[[str], None] = lambda s: None,
                       every: int = 10) -> dict:
    """The task without real time: chunks every `replan` actions, the arm reaches every target exactly. The policy
    noise is seeded per episode and chunk, so the result is a pure function of (policy, seeds). `progress` gets
    'episode i/N ... success k/i so far' every `every` episodes (the tiny toy policy: ~0.1-0.3 s per episode on a
    CPU core)."""
    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}")
    if policy is not None:
        check_policy(policy, task)
        replan = replan or policy.embodiment.replan
    results = []
    t_start = time.monotonic()
    for i in range(episodes):
        ep = make_episode(seed + i, task)
        calls = [0]

        def chunk_fn(image, q, instruction, ep=ep, calls=calls):
            calls[0] += 1
            if policy is None:
                return expert_chunk(ep, q, task)
            out = policy.infer({"images": [image], "state": q, "instruction": instruction},
                               seed=(seed + i) * 1000 + calls[0])
            return out["actions"]

        r = rollout(chunk_fn, ep, task, replan=replan or 8)
        results.append({"seed": ep.seed, "instruction": ep.instruction, "success": r["success"],
                        "seconds": round(r["steps"] / task.action_hz, 3), "distance": round(r["distance"], 4)})
        if (i + 1) % max(1, every) == 0 or i + 1 == episodes:
            progress(f"episode {i + 1}/{episodes} (kinematic, seed {ep.seed}): " + _running(results, t_start))
    out = summarize(results, task)
    out.update({"mode": "kinematic", "seed": seed, "wall_s": round(time.monotonic() - t_start, 1), "results": results})
    return out


def format_eval(s: dict, label: str = "") -> str:
    head = f"{label}: " if label else ""
    mean_ok = "-" if s["mean_success_s"] is None else f"{s['mean_success_s']:.2f} s"
    return (f"{head}success {s['successes']}/{s['episodes']} ({100 * s['success_rate']:.1f}%), mean episode "
            f"{s['mean_episode_s']:.2f} s (successful ones {mean_ok}; limit {s['max_seconds']:g} s), {s['mode']}, "
            f"seeds {s['seed']}..{s['seed'] + s['episodes'] - 1}" + (f", faults {s['faults']}" if s["faults"] else "")
            + (f"; took {s['wall_s']:.0f} s" if s.get("wall_s") is not None else ""))
