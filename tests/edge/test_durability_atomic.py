"""edge/atomic.py: files replaced whole, directories swapped in only once complete (renameat2 exchange, and the
rename-aside fallback with its recovery), checked in-process and by killing a publishing process at random moments."""
import errno
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge import atomic

ROOT = Path(__file__).resolve().parents[2]
DEAD_PID = 999_999_999  # above any pid_max: never a running process


def _tree(path: Path, version: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for k in range(3):
        (path / f"f{k}.bin").write_bytes(bytes([version]) * 1000)
    (path / "manifest.json").write_text(json.dumps({"version": version}))
    return path


def _version(path: Path) -> int:
    v = json.loads((path / "manifest.json").read_text())["version"]
    assert all((path / f"f{k}.bin").read_bytes() == bytes([v]) * 1000 for k in range(3))
    return v


def _siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name != out.name)


def test_atomic_file_keeps_the_old_content_on_error(tmp_path):
    p = tmp_path / "a.json"
    atomic.write_json(p, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic.atomic_file(p, "w") as f:
            f.write('{"v": 2')
            raise RuntimeError("killed mid-write")
    assert json.loads(p.read_text()) == {"v": 1} and os.listdir(tmp_path) == ["a.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path):
    (tmp_path / f".step_000001.npz.{DEAD_PID}-abcdef.tmp").write_bytes(b"x")
    mine = atomic.temp_path(tmp_path / "step_000002.npz")
    mine.write_bytes(b"x")  # a live writer's (ours): kept
    (tmp_path / "step_000000.npz").write_bytes(b"x")
    assert atomic.remove_stale_temps(tmp_path) == 1
    assert sorted(os.listdir(tmp_path)) == sorted([mine.name, "step_000000.npz"])


@pytest.mark.parametrize("mode", ["exchange", "fallback"])
def test_replace_dir_swaps_a_complete_directory_in(tmp_path, monkeypatch, mode):
    if mode == "fallback":
        monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
    elif not atomic.exchange(_tree(tmp_path / "x", 1), _tree(tmp_path / "y", 2)):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    out = tmp_path / "out" / "engines"
    for version in (1, 2, 3):
        with atomic.staged_dir(out) as stage:
            _tree(stage, version)
            atomic.replace_dir(stage, out)
        assert _version(out) == version and _siblings(out) == []
    with pytest.raises(RuntimeError):  # a failed build leaves the previous one, and no staging directory
        with atomic.staged_dir(out) as stage:
            _tree(stage, 4)
            raise RuntimeError("export failed")
    assert _version(out) == 3 and _siblings(out) == []


def test_recovery_restores_the_previous_directory_after_a_kill_between_the_renames(tmp_path):
    out = tmp_path / "engines"
    _tree(out.with_name(f"engines.old-{DEAD_PID}-aaaaaa"), 1)  # renamed aside, then killed
    _tree(out.with_name(f"engines.partial-{DEAD_PID}-bbbbbb"), 2)  # the complete new one, never renamed in
    live = _tree(out.with_name(f"engines.partial-{os.getpid()}-cccccc"), 3)  # a running export's: untouched
    atomic.recover_dir(out)
    assert _version(out) == 1 and _siblings(out) == [live.name]
    _tree(out.with_name(f"engines.old-{DEAD_PID}-dddddd"), 0)  # killed while deleting the replaced one
    atomic.recover_dir(out)
    assert _version(out) == 1 and _siblings(out) == [live.name]


def test_exchange_reports_unsupported_as_false_and_errors_as_oserror(tmp_path):
    a, b = _tree(tmp_path / "a", 1), tmp_path / "missing"
    if atomic._renameat2() is None:
        assert atomic.exchange(a, b) is False
        return
    with pytest.raises(OSError) as err:
        atomic.exchange(a, b)
    assert err.value.errno == errno.ENOENT


_PUBLISHER = """
import json, os, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from edge import atomic
if sys.argv[2] == "fallback":
    atomic.exchange = lambda a, b: False
    _rename = os.rename

    def slow_rename(a, b):  # widen the window between "old aside" and "new in" (a slow disk) so kills land in it
        _rename(a, b)
        if ".old-" in str(b):
            time.sleep(0.02)

    os.rename = slow_rename
out, version = Path(sys.argv[1]), int(sys.argv[3])
print("ready", flush=True)  # imports done: the kill delay counts from here, not from a (loaded) interpreter start
while True:
    version += 1
    with atomic.staged_dir(out) as stage:
        for k in range(3):
            (stage / f"f{{k}}.bin").write_bytes(bytes([version % 256]) * 1000)
        (stage / "manifest.json").write_text(json.dumps({{"version": version % 256}}))
        atomic.replace_dir(stage, out)
"""


def _kill_publisher(tmp_path, mode: str, kills: int, seed: int) -> dict:
    script = tmp_path / "publish.py"
    script.write_text(_PUBLISHER.format(root=str(ROOT)))
    out = tmp_path / mode / "engines"
    out.parent.mkdir()
    _tree(out, 0)
    rng = random.Random(seed)
    stats = {"kills": 0, "out_missing_before_recovery": 0, "failures": []}
    version = 0
    for i in range(kills):
        proc = subprocess.Popen([sys.executable, str(script), str(out), mode, str(version)], stdout=subprocess.PIPE,
                                text=True)
        proc.stdout.readline()  # "ready"
        time.sleep(rng.uniform(0.05, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        stats["kills"] += 1
        stats["out_missing_before_recovery"] += not out.exists()
        atomic.recover_dir(out)  # what the next start does
        try:
            version = _version(out)
        except Exception as exc:  # noqa: BLE001 - a half-written or lost output is the failure looked for
            stats["failures"].append(f"kill {i}: {type(exc).__name__}: {exc}")
            break
        if _siblings(out):
            stats["failures"].append(f"kill {i}: leftovers {_siblings(out)}")
    return stats


@pytest.mark.parametrize("mode", ["exchange", "fallback"])
def test_kill_9_while_publishing_directories(tmp_path, mode):
    stats = _kill_publisher(tmp_path, mode, kills=8, seed=7)
    assert stats["failures"] == []
    if mode == "exchange" and atomic._renameat2() is not None:
        assert stats["out_missing_before_recovery"] == 0  # one atomic exchange: OUT never disappears
    if mode == "fallback":
        assert stats["out_missing_before_recovery"] >= 1  # kills fell between the renames; recovery restored OUT


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["exchange", "fallback"])
def test_kill_9_at_100_points_while_publishing_directories(tmp_path, mode):
    stats = _kill_publisher(tmp_path, mode, kills=100, seed=11)
    sys.stderr.write(f"\nreplace_dir ({mode}) kill campaign: {json.dumps(stats)}\n")
    assert stats["failures"] == []
    if mode == "exchange" and atomic._renameat2() is not None:
        assert stats["out_missing_before_recovery"] == 0
