"""Engine files checked against their manifest (`manifest.json` "files": name -> sha256, written by export, quantize
and build) before a backend loads them. A digest is cached under the package cache dir (`checksums.json`), keyed by
the file's path, size, mtime_ns, ctime_ns and inode, so a repeated load hashes nothing; any change to the file (even
one that keeps its size and mtime, such as a copy with `cp -p` or `rsync -t`) gets a new inode or ctime and is hashed
again. A cache that cannot be read or written is ignored: loading never depends on it."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .atomic import write_json
from .errors import ConfigError
from .files import read_json_object
from .manifest import sha256_file

log = logging.getLogger(__name__)

CACHE_NAME = "checksums.json"
CACHE_FORMAT = 1
MAX_ENTRIES = 2048


class IntegrityError(ConfigError):
    """An engine file does not match its manifest, or cannot be loaded (truncated, corrupt)."""


def _fix(directory: Path) -> str:
    return (f"Fix: export it again (`imagewam-edge export --out {directory}`, or quantize/build for those engines) or "
            "copy the engines directory / bundle again")


def read_manifest(directory: Path) -> dict | None:
    """manifest.json of an engines directory; None when there is none (hand-made directories are loaded unchecked)."""
    path = Path(directory) / "manifest.json"
    if not path.exists():
        return None
    data = read_json_object(path, f"the engine files cannot be checked without it. {_fix(path.parent)}",
                            error=IntegrityError)
    if not isinstance(data.get("files", {}), dict):
        raise IntegrityError(f"{path}: field `files` must map file names to sha256 digests. {_fix(path.parent)}")
    return data


class ChecksumCache:
    """sha256 of files by (path, size, mtime_ns, ctime_ns, inode), persisted as JSON, written atomically."""

    def __init__(self, path: str | Path | None = None):
        if path is None:
            from .paths import cache_dir

            path = cache_dir() / CACHE_NAME
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        self.dirty = False
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("format") == CACHE_FORMAT and isinstance(data.get("files"), dict):
                self.entries = data["files"]
        except (OSError, ValueError) as exc:
            if not isinstance(exc, FileNotFoundError):
                log.debug("checksum cache %s ignored: %s", self.path, exc)

    @staticmethod
    def _signature(st: os.stat_result) -> list[int]:
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]

    def sha256(self, path: Path) -> tuple[str, bool]:
        """-> (hex digest, True when it came from the cache)."""
        key = str(Path(path).resolve())
        st = os.stat(key)
        sig = self._signature(st)
        hit = self.entries.get(key)
        if isinstance(hit, dict) and hit.get("sig") == sig and isinstance(hit.get("sha256"), str):
            return hit["sha256"], True
        digest = sha256_file(Path(key))
        if self._signature(os.stat(key)) == sig:  # unchanged while it was read: safe to remember
            self.entries.pop(key, None)
            self.entries[key] = {"sig": sig, "sha256": digest}
            self.dirty = True
        return digest, False

    def save(self) -> None:
        if not self.dirty:
            return
        if len(self.entries) > MAX_ENTRIES:  # forget files that are gone, then the oldest entries
            self.entries = {k: v for k, v in self.entries.items() if os.path.exists(k)}
            self.entries = dict(list(self.entries.items())[-MAX_ENTRIES:])
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, {"format": CACHE_FORMAT, "files": self.entries}, indent=None)
            self.dirty = False
        except OSError as exc:  # a read-only or full disk must not stop the robot
            log.warning("could not write the checksum cache %s (%s); the next load hashes the engines again",
                        self.path, exc)


def verify_engine_files(directory: str | Path, names: list[str], cache: ChecksumCache | None = None) -> dict[str, str]:
    """Check the listed files against manifest.json. Returns {name: "cached" | "hashed" | "unlisted"}; {} when the
    directory has no manifest. Raises IntegrityError naming the file, expected vs found digest and the fix."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        log.info("%s has no manifest.json: engine files are loaded without a checksum check", directory)
        return {}
    files = manifest.get("files", {})
    cache = cache if cache is not None else ChecksumCache()
    result = {}
    try:
        for name in names:
            path = directory / name
            if name not in files:
                if path.exists():
                    log.warning("%s is not listed in %s/manifest.json: loaded unchecked", path, directory)
                    result[name] = "unlisted"
                continue
            if not path.is_file():
                raise IntegrityError(f"{path} is missing (listed in manifest.json). {_fix(directory)}")
            found, cached = cache.sha256(path)
            if found != files[name]:
                raise IntegrityError(f"{path} does not match manifest.json: sha256 expected {files[name]}, found "
                                     f"{found} ({path.stat().st_size} bytes); the file is truncated, corrupt or was "
                                     f"replaced. {_fix(directory)}")
            result[name] = "cached" if cached else "hashed"
    finally:
        cache.save()
    return result
