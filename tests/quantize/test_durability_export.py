"""`export --out` over an existing engines directory, killed with SIGKILL at random moments and at the swap itself:
OUT is always either the previous export, intact (every manifest checksum verifies), or the new one, complete; what
the kill left beside it is cleaned at the next start."""
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge import atomic
from edge.default import TOY_CHECKPOINT
from edge.manifest import verify_files

EXE = Path(sys.executable).with_name("imagewam-edge")
INSTRUCTIONS = (["move to the red block"], ["move to the green block", "move to the blue block"])


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check(out: Path) -> dict:
    """OUT's manifest and every file it lists verify, and nothing else is in OUT."""
    manifest = json.loads((out / "manifest.json").read_text())
    verify_files(out, manifest)
    extra = set(os.listdir(out)) - set(manifest["files"]) - {"manifest.json"}
    if extra:
        raise AssertionError(f"{out}: files not in the manifest: {sorted(extra)}")
    return manifest


def _wait_for_complete_stage(out: Path, deadline: float) -> bool:
    """Spin until a staging directory holds its manifest (written last): the swap is about to happen."""
    while time.monotonic() < deadline:
        if any(out.parent.glob(f"{out.name}.partial-*/manifest.json")):
            return True
        time.sleep(0.001)
    return False


def _kill_campaign(checkpoint: Path, out: Path, random_kills: int, aimed_kills: int, seed: int,
                   span: tuple[float, float]) -> dict:
    rng = random.Random(seed)
    plan = ["random"] * random_kills + ["aimed"] * aimed_kills
    rng.shuffle(plan)
    stats = {"kills": 0, "aimed": 0, "previous_kept": 0, "new_complete": 0, "finished_before_kill": 0,
             "out_missing_before_recovery": 0, "leftovers_cleaned": 0, "failures": []}
    for i, kind in enumerate(plan):
        before = _digest(out / "manifest.json")
        instructions = INSTRUCTIONS[i % 2]
        cmd = [str(EXE), "export", "--checkpoint", str(checkpoint), "--out", str(out)]
        for text in instructions:
            cmd += ["--instruction", text]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        t0 = time.monotonic()
        if kind == "aimed":
            stats["aimed"] += _wait_for_complete_stage(out, t0 + 120)
            time.sleep(rng.uniform(0.0, 0.03))  # spread over fsync, exchange, deleting the old one
        else:
            time.sleep(rng.uniform(*span))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            stats["kills"] += 1
        else:
            stats["finished_before_kill"] += 1
        proc.wait(timeout=60)
        stats["out_missing_before_recovery"] += not out.exists()
        left = [p for p in out.parent.iterdir() if p.name.startswith(out.name + ".")]
        atomic.recover_dir(out)  # what the next export does first
        stats["leftovers_cleaned"] += len(left)
        try:
            manifest = _check(out)
        except Exception as exc:  # noqa: BLE001 - a lost or half-written export is the failure looked for
            stats["failures"].append(f"kill {i} ({kind}): {type(exc).__name__}: {exc}")
            break
        if _digest(out / "manifest.json") == before:
            stats["previous_kept"] += 1
        elif manifest["source"]["checkpoint"] == str(checkpoint.resolve()):
            stats["new_complete"] += 1
        else:
            stats["failures"].append(f"kill {i}: OUT is neither the previous export nor the new one")
        rest = [p.name for p in out.parent.iterdir() if p.name.startswith(out.name + ".")]
        if rest:
            stats["failures"].append(f"kill {i}: left after recovery: {rest}")
    return stats


@pytest.fixture
def previous_export(demo_engines, tmp_path):
    """OUT holds a good export (the demo checkpoint's); the runs export the toy checkpoint over it."""
    checkpoint = Path(shutil.copytree(TOY_CHECKPOINT, tmp_path / "toy"))
    out = tmp_path / "out" / "engines"
    shutil.copytree(demo_engines, out)
    _check(out)
    return checkpoint, out


def test_kill_9_during_export_keeps_the_previous_export(previous_export):
    checkpoint, out = previous_export
    stats = _kill_campaign(checkpoint, out, random_kills=1, aimed_kills=1, seed=3, span=(2.0, 6.0))
    assert stats["failures"] == []
    assert stats["previous_kept"] + stats["new_complete"] == 2


@pytest.mark.slow
def test_kill_9_at_22_points_of_export(previous_export):
    checkpoint, out = previous_export
    t0 = time.monotonic()
    subprocess.run([str(EXE), "export", "--checkpoint", str(checkpoint), "--out", str(out.with_name("timing"))],
                   check=True, capture_output=True)
    full = time.monotonic() - t0
    shutil.rmtree(out.with_name("timing"))
    stats = _kill_campaign(checkpoint, out, random_kills=14, aimed_kills=8, seed=2024, span=(0.3, full * 1.05))
    stats["full_export_s"] = round(full, 1)
    sys.stderr.write(f"\nexport --out kill campaign: {json.dumps(stats)}\n")
    assert stats["failures"] == []
    assert stats["kills"] >= 20 and stats["aimed"] == 8
    r = subprocess.run([str(EXE), "export", "--checkpoint", str(checkpoint), "--out", str(out)], capture_output=True)
    assert r.returncode == 0 and _check(out)["source"]["checkpoint"] == str(checkpoint.resolve())
    assert [p.name for p in out.parent.iterdir()] == ["engines"]
