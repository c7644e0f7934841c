"""`imagewam-edge bundle`: everything the control loop needs, in one versioned artifact.

    BUNDLE/bundle.json     manifest: format, version (content hash), package version, model (variant, precision,
                           engine kind, source checkpoint), target, instructions, deploy settings, sha256 of every file
    BUNDLE/config.yaml     the run config, its paths rewritten to point inside the bundle
    BUNDLE/engines/        ONNX engines (built into TensorRT on the device by `flash`) or TensorRT engines
    BUNDLE/calibration/    the calibration files the config references
    BUNDLE/prompts.npz     prompt-embedding cache with exactly the listed instructions

`--out X.tar.gz` writes an archive; any other `--out` a directory. Either is built beside OUT and swapped in complete
(edge/atomic.py): an interrupted `bundle` leaves the previous OUT as it was."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import time
from pathlib import Path

import yaml

from .. import __version__
from ..atomic import replace_dir, staged_dir
from ..errors import ConfigError
from ..manifest import sha256_file, verify_files
from ..prompt_cache import PromptCache
from ..targets import check_precision_supported, get_target
from .perms import FILE_MODE, make_readable, tar_filter

log = logging.getLogger(__name__)
FORMAT = "imagewam-bundle"


def _load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config {path} not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def read_instructions(path: Path) -> list[str]:
    try:
        lines = [line.strip() for line in path.read_text().splitlines()]
    except FileNotFoundError:
        raise ConfigError(f"--prompts {path} not found: a text file with one instruction per line") from None
    return [line for line in lines if line and not line.startswith("#")]


def _copy_ref(value: str | None, base: Path, calibration: Path | None, dest_dir: Path, field: str) -> str | None:
    """Copy a file the config references into the bundle's calibration/ and return its new relative path."""
    if not value:
        return value
    src = Path(value).expanduser()
    candidates = [src] if src.is_absolute() else [base / src] + ([calibration / src] if calibration else [])
    if calibration and not src.is_absolute():
        candidates.append(calibration / src.name)
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise ConfigError(f"config field `{field}` = {value!r}: file not found (looked in "
                          f"{', '.join(str(c) for c in candidates)}); pass --calibration DIR holding it")
    rel = Path("calibration") / (src.relative_to(src.anchor) if src.is_absolute() else Path(*[p for p in src.parts if p != ".."]))
    (dest_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(found, dest_dir / rel)
    return str(rel)


def content_version(files: dict[str, str]) -> str:
    h = hashlib.sha256(json.dumps(sorted(files.items())).encode())
    return h.hexdigest()[:12]


def make_bundle(config: str | Path, out: str | Path, engines: str | Path, prompts: str | Path,
                calibration: str | Path | None = None, prompt_cache: str | Path | None = None, target: str = "orin",
                nvpmodel: int | None = 0, jetson_clocks: bool = True, serial_aliases: dict[str, str] | None = None,
                user: str = "imagewam") -> dict:
    config, out, engines = Path(config), Path(out), Path(engines)
    calibration = Path(calibration) if calibration else None
    tgt = get_target(target)
    raw = _load_yaml(config)
    base = config.parent
    emanifest_path = engines / "manifest.json"
    if not emanifest_path.exists():
        raise ConfigError(f"{engines} has no manifest.json: pass --engines with TensorRT engines (from "
                          "build) or ONNX engines (from export/quantize)")
    emanifest = json.loads(emanifest_path.read_text())
    if emanifest.get("gate") == "failed":
        raise ConfigError(f"{engines} failed its accuracy gate; re-quantize before bundling")
    verify_files(engines, emanifest)
    precision, kind = emanifest.get("precision", "fp32"), emanifest.get("kind")
    check_precision_supported(precision, tgt.compute_capability)
    if kind == "tensorrt" and tuple(emanifest.get("compute_capability", ())) != tgt.compute_capability:
        raise ConfigError(f"{engines} are TensorRT engines for sm {emanifest.get('compute_capability')}, not the "
                          f"{target} (sm {tgt.compute_capability}); bundle the ONNX engines (--engines ONNX_DIR) and let "
                          "flash build them")
    instructions = read_instructions(Path(prompts))
    if raw.get("instruction") and raw["instruction"] not in instructions:
        instructions.insert(0, raw["instruction"])
    if not instructions:
        raise ConfigError(f"--prompts {prompts} lists no instruction and the config has none")
    cache_src = PromptCache(prompt_cache or engines / "prompts.npz")
    spec = json.loads((engines / "policy.json").read_text())
    missing = [t for t in instructions if cache_src.get(t, spec["text_encoder"]) is None]
    if missing:
        raise ConfigError(f"{len(missing)} instruction(s) are not in the prompt cache {cache_src.path} for this model: "
                          f"{missing[:3]}; add them on the workstation: imagewam-edge prompts add --checkpoint DIR "
                          f"--prompt-cache {cache_src.path} --instruction \"...\"")
    with staged_dir(out) as stage:  # built beside OUT; the previous OUT stays until the new one is complete
        shutil.copytree(engines, stage / "engines", ignore=shutil.ignore_patterns("prompts.npz"))
        cache = PromptCache(stage / "prompts.npz")
        for text in instructions:
            cache.put(text, spec["text_encoder"], cache_src.get(text, spec["text_encoder"]))
        cache.save()
        policy = dict(raw.get("policy") or {})
        policy.pop("checkpoint", None)
        policy["engines"] = "engines"
        policy["prompt_cache"] = "prompts.npz"
        if policy.get("backend", "tensorrt") == "torch":
            raise ConfigError(f"{config}: policy.backend torch cannot run from a bundle (no torch on the device); "
                              "use tensorrt or onnxruntime")
        raw["policy"] = policy
        for i, cam in enumerate(raw.get("cameras") or []):
            for field in ("intrinsics", "handeye"):
                cam[field] = _copy_ref(cam.get(field), base, calibration, stage, f"cameras[{i}].{field}")
            if not cam.get("intrinsics"):
                cam.pop("intrinsics", None)
            if not cam.get("handeye"):
                cam.pop("handeye", None)
        for i, arm in enumerate(raw.get("arms") or []):
            if arm.get("calibration"):
                arm["calibration"] = _copy_ref(arm["calibration"], base, calibration, stage, f"arms[{i}].calibration")
        (stage / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        from ..config import from_yaml  # validates every field, resolving the rewritten relative paths

        from_yaml(stage / "config.yaml")
        make_readable(stage)  # the service user reads all of it (prompts.npz was written 0600 by mkstemp)
        files = {str(p.relative_to(stage)): sha256_file(p) for p in sorted(stage.rglob("*")) if p.is_file()}
        manifest = {
            "format": FORMAT, "version": content_version(files), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "package_version": __version__, "name": raw.get("name") or config.stem,
            "model": {"variant": spec.get("variant"), "precision": precision, "engines": kind,
                      "source": emanifest.get("source", {}), "embodiment": spec.get("embodiment")},
            "target": {"name": target, "description": tgt.name, "compute_capability": list(tgt.compute_capability),
                       "jetpack": tgt.jetpack, "tensorrt": tgt.tensorrt},
            "instructions": instructions,
            "deploy": {"nvpmodel": nvpmodel, "jetson_clocks": bool(jetson_clocks), "user": user,
                       "serial_aliases": dict(serial_aliases or {}),
                       "build_tensorrt": kind == "onnx" and policy.get("backend", "tensorrt") == "tensorrt"},
            "files": files,
        }
        (stage / "bundle.json").write_text(json.dumps(manifest, indent=1))
        os.chmod(stage / "bundle.json", FILE_MODE)
        if out.name.endswith((".tar.gz", ".tgz")):
            archive = stage.with_name(stage.name + ".tgz")  # a leftover of a killed run is cleaned like the stage
            try:
                with tarfile.open(archive, "w:gz") as tar:
                    tar.add(stage, arcname=f"imagewam-bundle-{manifest['version']}", filter=tar_filter)
                replace_dir(archive, out)
            finally:
                archive.unlink(missing_ok=True)
        else:
            replace_dir(stage, out)
    return manifest


def open_bundle(path: str | Path, workdir: Path) -> Path:
    """A bundle directory (as is) or archive (extracted under workdir); checksums verified."""
    path = Path(path)
    if path.is_file():
        with tarfile.open(path, "r:gz") as tar:
            members = tar.getmembers()
            if any(m.name.startswith("/") or ".." in Path(m.name).parts or m.issym() or m.islnk() for m in members):
                raise ConfigError(f"{path}: refusing an archive with absolute, parent or link paths")
            tar.extractall(workdir)
        roots = [p for p in workdir.iterdir() if (p / "bundle.json").exists()]
        if len(roots) != 1:
            raise ConfigError(f"{path} does not contain one bundle (bundle.json)")
        path = roots[0]
    manifest_path = path / "bundle.json"
    if not manifest_path.exists():
        raise ConfigError(f"{path} is not a bundle (no bundle.json); make one with `imagewam-edge bundle`")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise ConfigError(f"{manifest_path}: format {manifest.get('format')!r} is not {FORMAT!r}")
    for rel, digest in manifest["files"].items():
        f = path / rel
        if not f.is_file():
            raise ConfigError(f"bundle file {rel} is missing; re-copy the bundle")
        if sha256_file(f) != digest:
            raise ConfigError(f"bundle file {rel} does not match its checksum (corrupted in transfer?); re-copy "
                              "the bundle or rebuild it with `imagewam-edge bundle`")
    return path
