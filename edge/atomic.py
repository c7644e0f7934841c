"""Durable writes: nothing on disk is ever lost or half-written, whatever moment a `kill -9` or a power cut picks.

Files: written under a temporary dot-name in the same directory (`.NAME.<pid>-<hex>.tmp`, which no reader's pattern
matches), fsync'ed, renamed over the final name (`os.replace`, atomic), then the directory is fsync'ed.

Directories (`export --out`, `quantize --out`, `bundle --out`): built into a sibling staging directory
`OUT.partial-<pid>-<hex>`, then swapped in only once complete. The swap is one atomic `renameat2(RENAME_EXCHANGE)`
(Linux >= 3.15, glibc >= 2.28) followed by deleting the previous one; where that is unavailable: rename the previous
one aside (`OUT.old-<pid>-<hex>`), rename the new one in, delete the old one. `recover_dir` (run by `staged_dir` and
`replace_dir`, i.e. at the next start) puts an `OUT.old-*` back if a kill fell between those two renames and removes
what dead processes left behind.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import IO, Iterator

log = logging.getLogger(__name__)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 1 << 1
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}
_renameat2_fn: object = None  # None: not looked up yet; False: unavailable


def _token() -> str:
    return f"{os.getpid()}-{secrets.token_hex(3)}"


def temp_path(path: Path) -> Path:
    """A temporary sibling of `path` that no reader glob matches (leading dot, `.tmp` suffix)."""
    return path.with_name(f".{path.name}.{_token()}.tmp")


def remove_stale_temps(directory: str | Path) -> int:
    """Delete the temporary files (`temp_path` names) that killed processes left in `directory`; -> how many."""
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if name.startswith(".") and name.endswith(".tmp"):
            pid = name[:-4].rsplit(".", 1)[-1].split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, name))
                    removed += 1
    return removed


def fsync_dir(directory: str | Path) -> None:
    """Persist a directory's entries (renames, new files). Best effort: some filesystems refuse it."""
    _fsync_path(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _fsync_path(path: str | Path, flags: int = os.O_RDONLY) -> None:
    """fsync a file or directory by path; best effort (a filesystem that refuses it is not an error)."""
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb", sync: bool = True, sync_dir: bool = True) -> Iterator[IO]:
    """`with atomic_file(p) as f: f.write(...)`: `p` holds the old content or the complete new one, never a part.
    On an exception the temporary file is removed and `p` is untouched."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_file mode {mode!r}: 'wb' or 'w'")
    path = Path(path)
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies, unlike mkstemp's 0600
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def write_bytes(path: str | Path, data: bytes, sync_dir: bool = True) -> Path:
    with atomic_file(path, "wb", sync_dir=sync_dir) as f:
        f.write(data)
    return Path(path)


def write_text(path: str | Path, text: str, sync_dir: bool = True) -> Path:
    return write_bytes(path, text.encode("utf-8"), sync_dir=sync_dir)


def write_json(path: str | Path, data, sync_dir: bool = True, indent: int | None = 1) -> Path:
    return write_text(path, json.dumps(data, indent=indent, default=str), sync_dir=sync_dir)


# ---------------------------------------------------------------------------------------------- directories


def _renameat2():
    global _renameat2_fn
    if _renameat2_fn is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            _renameat2_fn = fn
        except (OSError, AttributeError):  # not Linux, or glibc < 2.28
            _renameat2_fn = False
    return _renameat2_fn or None


def exchange(a: str | Path, b: str | Path) -> bool:
    """Atomically swap two existing paths. False where the platform or filesystem cannot (caller falls back)."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(str(a)), _AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(b))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _leftovers(dest: Path) -> tuple[list[Path], list[Path]]:
    """(OUT.old-*, OUT.partial-*) siblings left by processes that are no longer running."""
    olds, partials = [], []
    try:
        entries = list(os.scandir(dest.parent))
    except OSError:
        return olds, partials
    for entry in entries:
        for marker, bucket in ((".old-", olds), (".partial-", partials)):
            prefix = dest.name + marker
            if entry.name.startswith(prefix):
                pid = entry.name[len(prefix):].split("-", 1)[0]
                if pid.isdigit() and not _pid_alive(int(pid)):
                    bucket.append(Path(entry.path))
    return olds, partials


def recover_dir(dest: str | Path) -> None:
    """Undo what a killed `replace_dir` left: restore `OUT.old-*` when OUT is missing, delete stale leftovers."""
    dest = Path(dest)
    olds, partials = _leftovers(dest)
    if olds and not os.path.lexists(dest):
        keep = max(olds, key=lambda p: p.stat().st_mtime_ns)
        os.rename(keep, dest)
        fsync_dir(dest.parent)
        olds.remove(keep)
        log.warning("%s: restored the previous version from %s (an earlier replacement was interrupted)", dest,
                    keep.name)
    for p in olds + partials:
        log.info("removing %s, left by an interrupted run", p)
        _remove(p)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under root (so the swap never publishes data still only in the page cache)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            _fsync_file(os.path.join(dirpath, name))
        fsync_dir(dirpath)


def _fsync_file(path: str | Path) -> None:
    if not os.path.islink(path):
        _fsync_path(path)


def replace_dir(new: str | Path, dest: str | Path, sync: bool = True) -> Path:
    """Publish `new` (a complete directory, or file) under the name `dest`, replacing what is there only now.
    At every instant `dest` is the previous version or the new one (fallback: after `recover_dir`)."""
    new, dest = Path(new), Path(dest)
    if sync:
        fsync_tree(new) if new.is_dir() else _fsync_file(new)
    recover_dir(dest)
    if not os.path.lexists(dest):
        os.rename(new, dest)
    elif new.is_file() and not dest.is_dir():
        os.replace(new, dest)
    elif exchange(new, dest):
        fsync_dir(dest.parent)
        _remove(new)  # `new` now names the previous version
    else:
        aside = dest.with_name(f"{dest.name}.old-{_token()}")
        os.rename(dest, aside)
        os.rename(new, dest)  # a kill between these two renames: recover_dir puts `aside` back at the next start
        fsync_dir(dest.parent)
        _remove(aside)
    fsync_dir(dest.parent)
    return dest


@contextlib.contextmanager
def staged_dir(dest: str | Path) -> Iterator[Path]:
    """A fresh, empty staging directory beside `dest` (`DEST.partial-<pid>-<hex>`), removed on exit unless it was
    published with `replace_dir(stage, dest)` inside the block. Leftovers of killed runs are cleaned first."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(dest)
    stage = dest.with_name(f"{dest.name}.partial-{_token()}")
    stage.mkdir()
    try:
        yield stage
    finally:
        if os.path.lexists(stage):
            _remove(stage)
