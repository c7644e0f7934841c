"""`imagewam-edge flash BUNDLE`: install a bundle on the device (or over ssh with --host).

Layout on the device (every path under --root, "/" by default):
    /opt/imagewam/releases/<version>/   the bundle (+ engines-trt/ built here from the bundled ONNX when needed)
    /opt/imagewam/current -> releases/<version>   switched atomically, last
    /var/cache/imagewam/timing.cache    TensorRT timing cache shared by builds
    /etc/udev/rules.d/99-imagewam.rules RealSense access + stable serial names (/dev/imagewam-*)
    /etc/systemd/system/imagewam-edge.service   runs `imagewam-edge run --config /opt/imagewam/current/config.yaml`

Idempotent (an installed version is verified, not copied again). A failure before the switch removes the partial
release and leaves `current` (the previous installation) untouched. `--dry-run` prints every step and runs no
system command; file steps still happen when --root is a staging directory (not "/"), so the result can be inspected.
`--no-system` does the file steps and the engine build but leaves udev, groups, systemd and power to someone else."""
from __future__ import annotations

import getpass
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from ..errors import ConfigError, ImageWAMEdgeError
from ..manifest import sha256_file
from .bundle import open_bundle
from .perms import FILE_MODE, make_dirs, make_readable

log = logging.getLogger(__name__)
SERVICE = "imagewam-edge.service"

REALSENSE_RULE = ('# Intel RealSense: access for the robot user (video/plugdev), no root needed\n'
                  'SUBSYSTEMS=="usb", ATTRS{idVendor}=="8086", MODE="0660", GROUP="plugdev"\n'
                  'KERNEL=="iio*", ATTRS{idVendor}=="8086", MODE="0660", GROUP="plugdev"\n')


class FlashError(ImageWAMEdgeError):
    """An installation step failed; the previous installation is still the current one."""


@dataclass
class Step:
    title: str
    kind: str  # "file" (inside --root) or "system" (a command on the device) or "build"
    command: list[str] = field(default_factory=list)
    action: Callable[[], None] | None = None


def udev_rules(aliases: dict[str, str]) -> str:
    lines = [REALSENSE_RULE, "# stable names for the arm controllers' USB-serial adapters (by adapter serial)"]
    for name, serial in sorted(aliases.items()):
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"serial alias name {name!r}: letters, digits, - and _ only")
        lines.append(f'SUBSYSTEM=="tty", ATTRS{{serial}}=="{serial}", SYMLINK+="{name}", GROUP="dialout", MODE="0660", '
                     'RUN+="/bin/sh -c \'echo 1 > /sys/bus/usb-serial/devices/%k/latency_timer || true\'"')
    return "\n".join(lines) + "\n"


def service_unit(user: str, exe: str, prefix: str = "/", jetson_clocks: bool = True) -> str:
    current = Path(prefix) / "opt/imagewam/current"
    pre = "ExecStartPre=+/usr/bin/jetson_clocks\n" if jetson_clocks else ""
    return f"""[Unit]
Description=ImageWAM Edge control loop
After=network.target
Wants=network.target

[Service]
Type=simple
User={user}
SupplementaryGroups=dialout plugdev video
WorkingDirectory={current}
{pre}ExecStart={exe} run --config {current}/config.yaml --summary {current}/last_summary.json
# SIGTERM (as SIGINT and SIGHUP) makes the loop do its safe stop: hold or torque off as configured, summary
# written, exit 0; the whole stop takes well under TimeoutStopSec
KillSignal=SIGTERM
TimeoutStopSec=15
# SCHED_FIFO for the control thread (rates.realtime_priority): commands on time while inference runs
LimitRTPRIO=99
Restart=on-failure
RestartSec=3

[Install]
WantedBy=multi-user.target
"""


def _atomic_write(path: Path, text: str) -> None:
    """0644 whatever the umask: the service user reads the unit, the rules and the installed config."""
    make_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            os.fchmod(f.fileno(), FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _atomic_symlink(target: Path, link: Path) -> None:
    tmp = link.with_name(f".{link.name}.new")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _release_ok(release: Path, manifest: dict) -> bool:
    if not (release / "bundle.json").exists():
        return False
    return all((release / rel).is_file() and sha256_file(release / rel) == d for rel, d in manifest["files"].items())


def plan(bundle_dir: Path, root: Path, user: str | None, exe: list[str], no_system: bool = False) -> tuple[list[Step], dict]:
    """The ordered steps of an installation (`exe`: how to call imagewam-edge on the device; `user`: who runs the
    service, default the bundle's)."""
    manifest = json.loads((bundle_dir / "bundle.json").read_text())
    deploy = manifest["deploy"]
    user = user or deploy.get("user") or os.environ.get("SUDO_USER") or getpass.getuser()
    version = manifest["version"]
    opt = root / "opt/imagewam"
    release, current = opt / "releases" / version, opt / "current"
    partial = opt / "releases" / f".{version}.partial"
    steps: list[Step] = []
    installed = _release_ok(release, manifest)

    def stage():
        if partial.exists():
            shutil.rmtree(partial)
        make_dirs(partial.parent)  # opt/imagewam/releases: 0755 even under umask 077
        shutil.copytree(bundle_dir, partial)
        make_readable(partial, chown=os.geteuid() == 0)  # an archive from a workstation keeps its uid otherwise

    if installed:
        steps.append(Step(f"release {version} already installed and verified at {release}", "file"))
    else:
        steps.append(Step(f"copy bundle {version} to {partial}", "file", action=stage))
    if deploy.get("build_tensorrt"):
        where = release if installed else partial
        trt_dir = where / "engines-trt"
        cmd = [*exe, "build", "--engines", str(where / "engines"), "--out", str(trt_dir),
               "--timing-cache", str(root / "var/cache/imagewam/timing.cache")]
        if installed and (trt_dir / "manifest.json").exists():
            steps.append(Step(f"TensorRT engines already built in {trt_dir}", "build"))
        else:
            steps.append(Step("build TensorRT engines on this device (timing cache kept across releases)", "build",
                              command=cmd, action=lambda: (root / "var/cache/imagewam").mkdir(parents=True, exist_ok=True)))

            def point_config_at_trt(where=where):
                cfg_path = where / "config.yaml"
                cfg = yaml.safe_load(cfg_path.read_text())
                cfg["policy"]["engines"] = "engines-trt"
                _atomic_write(cfg_path, yaml.safe_dump(cfg, sort_keys=False))

            steps.append(Step("point the installed config at engines-trt", "build", action=point_config_at_trt))
            steps.append(Step("engines-trt readable by the service user (0644/0755)", "build",
                              action=lambda where=where: make_readable(where / "engines-trt")))
    if not installed:
        steps.append(Step(f"activate release: {partial.name} -> {release.name}", "file",
                          action=lambda: (release.exists() and shutil.rmtree(release), partial.rename(release))))
    rules = udev_rules(deploy.get("serial_aliases", {}))
    steps.append(Step("udev rules: RealSense access, stable serial names", "file",
                      action=lambda: _atomic_write(root / "etc/udev/rules.d/99-imagewam.rules", rules)))
    unit = service_unit(user, shlex.join(exe), "/", deploy.get("jetson_clocks", True))
    steps.append(Step(f"systemd unit {SERVICE}", "file",
                      action=lambda: _atomic_write(root / "etc/systemd/system" / SERVICE, unit)))
    steps.append(Step(f"switch {current} -> releases/{version}", "file",
                      action=lambda: _atomic_symlink(Path("releases") / version, current)))
    if not no_system:
        u = user
        steps += [
            Step("reload udev rules", "system", ["udevadm", "control", "--reload-rules"]),
            Step("apply udev rules to present devices", "system", ["udevadm", "trigger"]),
            Step(f"add {u} to dialout and plugdev (serial ports, cameras)", "system", ["usermod", "-aG", "dialout,plugdev,video", u]),
            Step("reload systemd", "system", ["systemctl", "daemon-reload"]),
            Step(f"enable {SERVICE} at boot", "system", ["systemctl", "enable", SERVICE]),
        ]
        if deploy.get("nvpmodel") is not None:
            steps.append(Step(f"power mode {deploy['nvpmodel']}", "system", ["nvpmodel", "-m", str(deploy["nvpmodel"])]))
        if deploy.get("jetson_clocks"):
            steps.append(Step("lock clocks at maximum (also before every service start)", "system", ["jetson_clocks"]))
        steps.append(Step(f"restart {SERVICE} on the new release", "system", ["systemctl", "restart", SERVICE]))
    return steps, manifest


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise FlashError(f"`{shlex.join(cmd)}` failed with exit code {res.returncode}: "
                         f"{(res.stderr or res.stdout).strip()[-500:]}")


def flash(bundle: str | Path, root: str | Path = "/", dry_run: bool = False, no_system: bool = False,
          user: str | None = None, exe: str | None = None, say: Callable[[str], None] = print) -> dict:
    """Run the plan. Dry run: system commands and builds are printed, not run; file steps run only under a
    staging --root. A failure before the switch removes the partial release; `current` is never left broken."""
    root = Path(root)
    exe_list = shlex.split(exe) if exe else ([shutil.which("imagewam-edge")] if shutil.which("imagewam-edge")
                                             else [sys.executable, "-m", "edge.cli"])
    staging = root.resolve() != Path("/")
    if staging and not (dry_run or no_system):
        raise ConfigError(f"--root {root} installs into a staging tree: the device-wide steps (udev, groups, systemd, "
                          "power) would hit this machine; add --dry-run or --no-system")
    with tempfile.TemporaryDirectory() as work:
        bundle_dir = _open_bundle(bundle, Path(work))
        try:
            steps, manifest = plan(bundle_dir, root, user, exe_list, no_system)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{bundle_dir / 'bundle.json'}: field {exc} is missing or malformed; rebuild the "
                              "bundle with `imagewam-edge bundle`") from None
        partial = root / "opt/imagewam/releases" / f".{manifest['version']}.partial"
        done = []
        try:
            for i, step in enumerate(steps, 1):
                say(f"[{i}/{len(steps)}] {step.title}" + (f"\n        $ {shlex.join(step.command)}" if step.command else ""))
                run_it = not dry_run or (step.kind == "file" and staging)
                if run_it:
                    if step.action:
                        step.action()
                    if step.command:
                        _run(step.command)
                done.append(step.title)
        except Exception as exc:
            if partial.exists():
                shutil.rmtree(partial, ignore_errors=True)
            current = root / "opt/imagewam/current"
            prev = os.readlink(current) if current.is_symlink() else "none"
            raise FlashError(f"step {len(done) + 1} ({steps[len(done)].title}) failed: {exc}. Nothing was switched: "
                             f"the current installation is still {prev}") from exc
    return {"version": manifest["version"], "root": str(root), "dry_run": dry_run, "steps": [s.title for s in steps],
            "done": done}


def _open_bundle(bundle: str | Path, work: Path) -> Path:
    """open_bundle with a truncated archive or a corrupt bundle.json refused by name instead of a traceback."""
    if not Path(bundle).exists():
        raise ConfigError(f"bundle {bundle} not found; pass the archive or directory written by `imagewam-edge bundle`")
    fix = "copy the bundle again (interrupted transfer?) or rebuild it with `imagewam-edge bundle`"
    try:
        return open_bundle(bundle, work)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ConfigError(f"bundle {bundle} cannot be read as a .tar.gz archive ({type(exc).__name__}: {exc}); "
                          f"{fix}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"bundle {bundle}: bundle.json is not valid JSON ({exc}); {fix}") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"bundle {bundle}: bundle.json field {exc} is missing or malformed; {fix}") from None


def check_remote_tools(tools: tuple[str, ...] = ("rsync", "ssh")) -> None:
    """`flash --host` copies with rsync and runs over ssh: refuse before starting if either is not installed here."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pkgs = " ".join("openssh-client" if t == "ssh" else t for t in missing)
        raise ConfigError(f"`flash --host` needs {' and '.join(missing)} on this machine, and {'they are' if len(missing) > 1 else 'it is'} "
                          f"not on PATH; install {'them' if len(missing) > 1 else 'it'}: sudo apt-get install {pkgs} "
                          "(the device needs rsync too), or copy the bundle yourself and run `imagewam-edge flash "
                          "BUNDLE` on the device")


def remote_commands(bundle: str | Path, host: str, extra: list[str]) -> list[list[str]]:
    """Copy the bundle to the device and run flash there (sudo for the system steps)."""
    name = Path(bundle).name
    remote = f"/tmp/{name}"
    copy = ["rsync", "-a", "--delete", f"{bundle}{'/' if Path(bundle).is_dir() else ''}", f"{host}:{remote}"]
    return [copy, ["ssh", host, "sudo", "-E", "imagewam-edge", "flash", remote, *extra]]
