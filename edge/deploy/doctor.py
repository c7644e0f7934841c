"""`imagewam-edge doctor`: what a user runs first on a device. Each check says what it found and, when something
is wrong, the fix. Reads files and runs read-only queries; never changes anything."""
from __future__ import annotations

import grp
import json
import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigError
from ..files import read_json_object
from ..targets import allowed_precisions


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail | info
    detail: str
    fix: str = ""


def _cmd(args: list[str], timeout: float = 5.0) -> str | None:
    if not shutil.which(args[0]):
        return None
    try:
        res = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (res.stdout or res.stderr).strip() if res.returncode == 0 else None


def l4t_release(root: Path = Path("/")) -> str | None:
    f = root / "etc/nv_tegra_release"
    if not f.exists():
        return None
    m = re.search(r"R(\d+) \(release\), REVISION: ([\d.]+)", f.read_text())
    return f"r{m.group(1)}.{m.group(2)}" if m else f.read_text().splitlines()[0]


def check_platform(root: Path) -> list[Check]:
    out = [Check("machine", "info", f"{platform.machine()}, Python {platform.python_version()}, {platform.system()}")]
    l4t = l4t_release(root)
    if l4t:
        out.append(Check("L4T / JetPack", "ok", f"L4T {l4t}"))
    else:
        out.append(Check("L4T / JetPack", "warn", "not a Jetson (no /etc/nv_tegra_release)",
                         "run doctor on the Jetson; on a workstation use --backend onnxruntime"))
    return out


def check_gpu() -> tuple[list[Check], tuple[int, int] | None]:
    checks, cc = [], None
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.8
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            cudart = None
    if cudart is not None:
        err, count = cudart.cudaGetDeviceCount()
        if int(err) == 0 and count > 0:
            _, major = cudart.cudaDeviceGetAttribute(cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor, 0)
            _, minor = cudart.cudaDeviceGetAttribute(cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor, 0)
            cc = (int(major), int(minor))
    if cc is None:
        smi = _cmd(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"])
        if smi:
            name, cap = [x.strip() for x in smi.splitlines()[0].split(",")]
            cc = tuple(int(x) for x in cap.split("."))  # type: ignore[assignment]
    if cc is None:
        checks.append(Check("GPU", "fail", "no CUDA GPU visible",
                            "on a Jetson: run natively or in the container with --runtime nvidia; elsewhere only "
                            "the onnxruntime CPU backend works"))
    else:
        checks.append(Check("GPU", "ok", f"compute capability {cc[0]}.{cc[1]}; precisions allowed: "
                            f"{', '.join(allowed_precisions(cc))}"))
    cuda_version = None
    vf = Path("/usr/local/cuda/version.json")
    if vf.exists():
        try:
            cuda_version = json.loads(vf.read_text())["cuda"]["version"]
        except (KeyError, json.JSONDecodeError):
            cuda_version = None
    checks.append(Check("CUDA", "ok" if cuda_version else "warn", f"CUDA {cuda_version}" if cuda_version else "CUDA toolkit not found",
                        "" if cuda_version else "JetPack installs it under /usr/local/cuda (sudo apt install nvidia-jetpack)"))
    try:
        import tensorrt

        checks.append(Check("TensorRT", "ok", f"TensorRT {tensorrt.__version__}"))
    except ImportError:
        checks.append(Check("TensorRT", "fail" if cc else "warn", "TensorRT Python bindings not importable",
                            "JetPack: sudo apt install python3-libnvinfer (or use jetson.Dockerfile)"))
    checks.append(check_cuda_python())
    try:
        import onnxruntime

        checks.append(Check("onnxruntime", "ok", f"onnxruntime {onnxruntime.__version__}"))
    except ImportError:
        checks.append(Check("onnxruntime", "warn", "onnxruntime not installed", "pip install 'imagewam-edge[cpu]'"))
    return checks, cc


def check_cuda_python() -> Check:
    """cuda-python (`cuda.bindings`; `cuda.cudart` before 12.8): the TensorRT backend's CUDA calls go through it."""
    try:
        from cuda import bindings

        version = getattr(bindings, "__version__", "")
    except ImportError:
        try:
            from cuda import cudart  # noqa: F401  (cuda-python < 12.8)
        except ImportError as exc:
            return Check("cuda-python", "warn", f"cuda-python not importable ({exc})",
                         "the TensorRT backend needs it: pip install 'imagewam-edge[jetson]' (or `pip install "
                         "cuda-python` matching this device's CUDA major version)")
        from importlib.metadata import PackageNotFoundError, version as dist_version

        try:
            version = dist_version("cuda-python")
        except PackageNotFoundError:
            version = ""
    return Check("cuda-python", "ok", f"cuda-python (cuda.bindings) {version}".rstrip())


def check_memory() -> list[Check]:
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        total = int(info["MemTotal"].split()[0]) / 2**20
        avail = int(info["MemAvailable"].split()[0]) / 2**20
    except (OSError, KeyError, ValueError):
        return [Check("memory", "warn", "could not read /proc/meminfo")]
    status = "ok" if avail >= 4 else "warn"
    return [Check("memory", status, f"{avail:.1f} GiB available of {total:.1f} GiB",
                  "" if status == "ok" else "the FLUX.2-4B INT8 engines need ~6 GiB: stop other processes")]


def check_cameras() -> list[Check]:
    try:
        import pyrealsense2 as rs
    except ImportError as exc:
        return [Check("cameras", "warn", f"pyrealsense2 not importable ({exc})",
                      "sudo apt install libusb-1.0-0; pip install 'imagewam-edge[realsense]' (aarch64: Python 3.10 wheel)")]
    try:
        devices = list(rs.context().query_devices())
    except RuntimeError as exc:
        return [Check("cameras", "fail", f"librealsense error: {exc}", "check the USB cable and the udev rules (flash installs them)")]
    if not devices:
        return [Check("cameras", "warn", "no RealSense camera found",
                      "plug the cameras into USB 3 ports; `imagewam-edge camera info` lists them")]
    found = []
    for d in devices:
        info = {k: d.get_info(getattr(rs.camera_info, k)) for k in ("name", "serial_number", "firmware_version")
                if d.supports(getattr(rs.camera_info, k))}
        found.append(f"{info.get('name')} serial {info.get('serial_number')} firmware {info.get('firmware_version')}")
    return [Check("cameras", "ok", "; ".join(found))]


def check_serial(root: Path) -> list[Check]:
    ports = sorted(p for pat in ("ttyUSB*", "ttyACM*", "imagewam-*") for p in (root / "dev").glob(pat))
    if not ports:
        return [Check("serial ports", "warn", "no USB-serial port (/dev/ttyUSB*, /dev/ttyACM*)",
                      "plug the arm controller's adapter; `imagewam-edge arm check --port PORT --ids ...` tests it")]
    out = []
    try:
        dialout = grp.getgrnam("dialout")
        in_group = os.getuid() == 0 or dialout.gr_gid in os.getgroups()
    except KeyError:
        in_group = False
    for p in ports:
        ok = os.access(p, os.R_OK | os.W_OK)
        out.append(Check(f"serial {p.name}", "ok" if ok else "fail", "read/write" if ok else "no permission",
                         "" if ok else ("sudo usermod -aG dialout $USER, then log in again" if not in_group
                                        else f"check the udev rules for {p}")))
    return out


def check_power() -> list[Check]:
    mode = _cmd(["nvpmodel", "-q"])
    clocks = _cmd(["jetson_clocks", "--show"])
    out = [Check("power mode", "ok" if mode else "info", (mode or "nvpmodel not available").replace("\n", "; "),
                 "" if mode else "on a Jetson: sudo nvpmodel -m 0 (MAXN) for the benchmark figures")]
    out.append(Check("clocks", "ok" if clocks else "info", "jetson_clocks state read" if clocks else "jetson_clocks not available",
                     "" if clocks else "on a Jetson: sudo jetson_clocks before measuring latency"))
    temps = []
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        try:
            temps.append(f"{(zone / 'type').read_text().strip()} {int((zone / 'temp').read_text()) / 1000:.0f}C")
        except (OSError, ValueError):
            continue
    if temps:
        out.append(Check("temperatures", "info", ", ".join(temps[:8])))
    return out


def check_engines(engines: Path | None, cc: tuple[int, int] | None) -> list[Check]:
    if engines is None:
        default = Path("/opt/imagewam/current")
        if not default.exists():
            return [Check("engines", "info", "no installation at /opt/imagewam/current",
                          "install a bundle with `imagewam-edge flash BUNDLE`, or pass --engines DIR")]
        engines = default / "engines-trt" if (default / "engines-trt").exists() else default / "engines"
    mf = engines / "manifest.json"
    if not mf.exists():
        return [Check("engines", "fail", f"{engines}: no manifest.json", "export/build the engines again")]
    try:
        manifest = read_json_object(mf, "export/build the engines again")
    except ConfigError as exc:
        return [Check("engines", "fail", str(exc), "export/build the engines again, or copy the directory again")]
    detail = f"{engines}: {manifest.get('kind')} {manifest.get('precision')}"
    if manifest.get("kind") != "tensorrt":
        return [Check("engines", "info", detail, "" if cc is None else f"build TensorRT engines: imagewam-edge build --engines {engines} --out DIR")]
    try:
        import tensorrt

        from ..manifest import check_tensorrt_manifest

        if cc is None:
            raise RuntimeError("no GPU to run them on")
        check_tensorrt_manifest(manifest, tensorrt.__version__, cc, where=str(engines))
        return [Check("engines", "ok", detail + f", TensorRT {manifest.get('tensorrt')}, sm {manifest.get('compute_capability')}")]
    except Exception as exc:  # ImportError, ConfigError, RuntimeError: all mean "these engines cannot run here"
        return [Check("engines", "fail", f"{detail}: {exc}", f"imagewam-edge build --engines <onnx dir> --out {engines}")]


def run_doctor(engines: str | Path | None = None, root: str | Path = "/") -> dict:
    root = Path(root)
    checks = check_platform(root)
    gpu, cc = check_gpu()
    checks += gpu + check_memory() + check_cameras() + check_serial(root) + check_power()
    checks += check_engines(Path(engines) if engines else None, cc)
    summary = {s: sum(1 for c in checks if c.status == s) for s in ("ok", "warn", "fail", "info")}
    return {"checks": [asdict(c) for c in checks], "summary": summary,
            "compute_capability": list(cc) if cc else None,
            "precisions": allowed_precisions(cc) if cc else ["fp32 (onnxruntime CPU)"]}
