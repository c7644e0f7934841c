"""Modes and owners of what bundle and flash write: readable by the service user whatever the installer's umask.

The service runs as an unprivileged user (bundle.json deploy.user); flash runs as root, often with umask 077
(sudo keeps root's), and temporary files from `mkstemp` are 0600. So every installed file gets an explicit mode:
0644 (0755 when any execute bit was set), directories 0755; a bundle extracted from an archive made on another
machine gets the installer as owner instead of the workstation's uid/gid.
"""
from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

FILE_MODE = 0o644
EXEC_MODE = 0o755
DIR_MODE = 0o755


def _mode_for(st: os.stat_result) -> int:
    if stat.S_ISDIR(st.st_mode):
        return DIR_MODE
    return EXEC_MODE if st.st_mode & 0o111 else FILE_MODE


def make_readable(root: str | Path, chown: bool = False) -> None:
    """Set `root` and everything under it to 0644 / 0755 (symlinks untouched); `chown`: owned by this process's
    effective user and group (used when installing as root)."""
    root = Path(root)
    paths = [root] if not root.is_dir() else [root, *root.rglob("*")]
    uid, gid = os.geteuid(), os.getegid()
    for p in paths:
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            continue
        if chown and (st.st_uid, st.st_gid) != (uid, gid):
            os.chown(p, uid, gid)
        mode = _mode_for(st)
        if stat.S_IMODE(st.st_mode) != mode:
            os.chmod(p, mode)


def make_dirs(path: str | Path) -> Path:
    """mkdir -p with 0755 on every directory it creates (whatever the umask); existing ones are left as they are."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        os.chmod(d, DIR_MODE)
    return path


def unreadable(root: str | Path) -> list[str]:
    """Paths under `root` (itself included) that a user other than the owner cannot read (or, for directories,
    enter): what the service user would trip over."""
    root = Path(root)
    bad = []
    for p in [root, *(root.rglob("*") if root.is_dir() else [])]:
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            continue
        need = 0o005 if stat.S_ISDIR(st.st_mode) else 0o004
        if st.st_mode & need != need:
            bad.append(f"{p} ({stat.filemode(st.st_mode)})")
    return bad


def tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """For `tarfile.add(filter=...)`: 0644/0755 and root:root in the archive, whatever the workstation had."""
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if info.isdir():
        info.mode = DIR_MODE
    elif info.isfile():
        info.mode = EXEC_MODE if info.mode & 0o111 else FILE_MODE
    return info
