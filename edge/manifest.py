"""Engine manifests: what an engines directory was built from and for. TensorRT engines are tied to the GPU
architecture and the TensorRT version; a mismatch is refused with the command that fixes it (pure functions)."""
from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import ConfigError


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_files(directory: Path, manifest: dict, names: list[str] | None = None) -> None:
    """Checksums of the listed files (default: all) against the manifest."""
    files = manifest.get("files", {})
    for name in names or sorted(files):
        if name not in files:
            raise ConfigError(f"{directory}/manifest.json does not list {name}; rebuild the directory")
        path = directory / name
        if not path.exists():
            raise ConfigError(f"{path} is missing (listed in manifest.json); copy the whole engines directory again")
        if sha256_file(path) != files[name]:
            raise ConfigError(f"{path} does not match its checksum in manifest.json (corrupted or replaced); "
                              "copy it again or rebuild with `imagewam-edge build`")


def check_tensorrt_manifest(manifest: dict, trt_version: str, compute_capability: tuple[int, int],
                            source_sha: str | None = None, where: str = "engines") -> None:
    """Refuse engines built with another TensorRT (major.minor) or for another GPU, or from another checkpoint."""
    if manifest.get("kind") != "tensorrt":
        raise ConfigError(f"{where} holds {manifest.get('kind')} engines, not TensorRT: build them on this device "
                          f"with `imagewam-edge build --engines DIR --out DIR`, or use --backend onnxruntime")
    built_trt = str(manifest.get("tensorrt", ""))
    if built_trt.split(".")[:2] != str(trt_version).split(".")[:2]:
        raise ConfigError(f"{where} was built with TensorRT {built_trt}; this device has TensorRT {trt_version}. "
                          "Engines are not portable across TensorRT versions: rebuild with `imagewam-edge build`")
    built_cc = tuple(manifest.get("compute_capability", ()))
    if built_cc != tuple(compute_capability):
        raise ConfigError(f"{where} was built for compute capability {'.'.join(map(str, built_cc))}; this GPU is "
                          f"{'.'.join(map(str, compute_capability))}. Rebuild on this device with `imagewam-edge build`")
    if source_sha and manifest.get("source", {}).get("model.pt") not in (None, source_sha):
        raise ConfigError(f"{where} was built from another checkpoint (model.pt sha256 "
                          f"{manifest['source']['model.pt'][:12]}..., expected {source_sha[:12]}...); rebuild from "
                          "the checkpoint you mean to run")


def profile_shapes(meta: dict) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """Optimization profile (min, opt, max) per input from a component's metadata (symbolic dims + ranges)."""
    ranges = meta.get("ranges", {})
    out = {}
    for inp in meta["inputs"]:
        lo, opt, hi = [], [], []
        for dim in inp["shape"]:
            if isinstance(dim, int) and dim > 0:
                lo.append(dim), opt.append(dim), hi.append(dim)
            elif dim == "one" or dim == 1:
                lo.append(1), opt.append(1), hi.append(1)
            elif dim in ranges:
                a, b, c = (int(v) for v in ranges[dim])
                if not a <= b <= c:
                    raise ConfigError(f"{meta['component']}: range of {dim} {ranges[dim]} is not min <= opt <= max")
                lo.append(a), opt.append(b), hi.append(c)
            else:
                raise ConfigError(f"{meta['component']}.{inp['name']}: dynamic dim {dim!r} has no range in the "
                                  "metadata; re-export with this version of `imagewam-edge export`")
        out[inp["name"]] = (tuple(lo), tuple(opt), tuple(hi))
    return out
