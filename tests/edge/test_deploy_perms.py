"""Deployment files readable by the service user (issue 17): bundle and flash into a staging root under umask 077
(what `sudo` keeps from root), from a directory and from an archive made by another uid; every installed file 0644
(0755 if executable), every directory 0755, owned by the installer."""
from __future__ import annotations

import os
import stat
import tarfile

import pytest

from edge.deploy.bundle import make_bundle
from edge.deploy.flash import SERVICE, flash
from edge.deploy.perms import make_dirs, make_readable, tar_filter, unreadable
from tests.edge.test_deploy import _config


@pytest.fixture
def strict_umask():
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _modes(root):
    out = {}
    for p in [root, *root.rglob("*")]:
        st = os.lstat(p)
        if not stat.S_ISLNK(st.st_mode):
            out[str(p.relative_to(root))] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return out


def _check_installed(root, version):
    release = root / "opt/imagewam/releases" / version
    assert unreadable(release) == []
    for rel, (mode, uid, gid) in _modes(release).items():
        p = release / rel if rel != "." else release
        assert mode == (0o755 if p.is_dir() or mode & 0o111 else 0o644), (rel, oct(mode))
        assert (uid, gid) == (os.geteuid(), os.getegid()), rel
    assert stat.S_IMODE(os.stat(release / "prompts.npz").st_mode) == 0o644  # the service reads its prompt cache
    for d in ("opt", "opt/imagewam", "opt/imagewam/releases", "etc/systemd/system", "etc/udev/rules.d"):
        assert stat.S_IMODE(os.stat(root / d).st_mode) == 0o755, d
    for f in ("etc/udev/rules.d/99-imagewam.rules", f"etc/systemd/system/{SERVICE}"):
        assert stat.S_IMODE(os.stat(root / f).st_mode) == 0o644, f
    assert (root / "opt/imagewam/current/config.yaml").read_text()


def test_bundle_and_flash_under_umask_077_are_readable(demo_engines, tmp_path, strict_umask):
    cfg, calib, prompts = _config(tmp_path)
    manifest = make_bundle(cfg, tmp_path / "bundle", demo_engines, prompts, calibration=calib)
    assert unreadable(tmp_path / "bundle") == []
    assert stat.S_IMODE(os.stat(tmp_path / "bundle" / "prompts.npz").st_mode) == 0o644
    root = tmp_path / "root"
    flash(tmp_path / "bundle", root=root, no_system=True, user="robot", say=lambda s: None)
    _check_installed(root, manifest["version"])


def test_archive_from_another_uid_is_installed_owned_by_the_installer(demo_engines, tmp_path, strict_umask):
    cfg, calib, prompts = _config(tmp_path)
    manifest = make_bundle(cfg, tmp_path / "b.tar.gz", demo_engines, prompts, calibration=calib)
    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
    assert all(m.uid == 0 and m.mode in (0o644, 0o755) for m in members)
    # the same archive as a workstation user with umask 077 would have made it without the filter
    other = tmp_path / "other.tar.gz"
    with tarfile.open(tmp_path / "b.tar.gz") as src, tarfile.open(other, "w:gz") as dst:
        for m in src.getmembers():
            m.uid, m.gid, m.mode = 1234, 1234, (0o700 if m.isdir() else 0o600)
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    root = tmp_path / "root"
    flash(other, root=root, no_system=True, user="robot", say=lambda s: None)
    _check_installed(root, manifest["version"])


def test_helpers(tmp_path, strict_umask):
    made = make_dirs(tmp_path / "a" / "b")
    assert stat.S_IMODE(os.stat(made).st_mode) == stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o755
    (made / "tool").write_text("#!/bin/sh\n")
    os.chmod(made / "tool", 0o700)
    (made / "data").write_text("x")
    assert len(unreadable(tmp_path / "a")) == 2
    make_readable(tmp_path / "a")
    assert unreadable(tmp_path / "a") == []
    assert stat.S_IMODE(os.stat(made / "tool").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(made / "data").st_mode) == 0o644
    info = tar_filter(tarfile.TarInfo("x"))
    assert (info.uid, info.uname, info.mode) == (0, "root", 0o644)
