"""Recordings (`run --record`) are never lost or half-written: steps appended atomically, metadata written once and
atomically, a reader that ignores temporary files, skips a cut trailing step and names anything else that is damaged;
and `kill -9` at random moments of real `run --record` runs appending to one directory never costs an earlier
episode."""
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge.errors import ConfigError
from edge.recording import RecordingWriter, iter_observations, read_session

EXE = Path(sys.executable).with_name("imagewam-edge")


def _writer(root, **kw) -> RecordingWriter:
    return RecordingWriter(root, canvas="sim", slots=["main"], state_dim=7, action_dim=7, **kw)


def _add(w, n, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        w.add([rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)], rng.normal(size=7), actions=np.zeros((4, 7)),
              sent=np.zeros(7))


def _record(root, episodes=(3, 2)):
    w = _writer(root)
    for i, n in enumerate(episodes):
        w.start_episode(f"instruction {i}")
        _add(w, n, seed=i)
    w.close()
    return root


def test_metadata_is_written_once_and_steps_never_touch_it(tmp_path):
    root = tmp_path / "rec"
    w = _writer(root)
    session_ino = (root / "session.json").stat().st_ino
    ep = w.start_episode("move to the red block", seed=3)
    meta_ino = (ep / "episode.json").stat().st_ino
    _add(w, 4)
    assert (ep / "episode.json").stat().st_ino == meta_ino  # not rewritten per step
    meta = json.loads((ep / "episode.json").read_text())
    assert meta["instruction"] == "move to the red block" and meta["seed"] == 3 and "steps" not in meta
    assert not [p for p in os.listdir(ep) if p.startswith(".")]  # no temporary file left behind
    w.close()
    w.close()  # idempotent
    assert json.loads((ep / "episode.json").read_text())["steps"] == 4
    with pytest.raises(ConfigError, match="start_episode"):
        w.add([np.zeros((8, 8, 3), np.uint8)], np.zeros(7))
    w.start_episode("again")  # the evaluation closes the writer after each episode, then starts the next one
    _add(w, 1)
    w.close()
    w2 = _writer(root)  # appending to the recording keeps its session.json as it is
    assert (root / "session.json").stat().st_ino == session_ino and w2.episode == 2
    obs = list(iter_observations(root))
    assert [(o.episode, o.step) for o in obs] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
    assert obs[0].instruction == "move to the red block" and obs[-1].instruction == "again"


def test_an_incompatible_run_cannot_append(tmp_path):
    root = _record(tmp_path / "rec")
    with pytest.raises(ConfigError, match=r"session.json: this recording has state_dim = 7.*new directory"):
        RecordingWriter(root, canvas="sim", slots=["main"], state_dim=8, action_dim=7)


def test_reader_ignores_temporary_files_and_counts_the_steps(tmp_path):
    root = _record(tmp_path / "rec")
    ep = root / "episode_0000"
    (ep / ".step_000003.npz.123-abcdef.tmp").write_bytes(b"PK\x03\x04 half")  # this writer's temporary name
    (ep / "step_000003.tmp.npz").write_bytes(b"PK\x03\x04 half")  # an older writer's temporary name
    (root / ".session.json.1-aa.tmp").write_text("{")
    meta = json.loads((ep / "episode.json").read_text())
    (ep / "episode.json").write_text(json.dumps({**meta, "steps": 99}))  # a stale count is not trusted
    assert [(o.episode, o.step) for o in iter_observations(root)] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]


def test_a_cut_trailing_step_is_skipped_with_a_warning(tmp_path, caplog):
    root = _record(tmp_path / "rec")
    last = root / "episode_0000" / "step_000002.npz"
    last.write_bytes(last.read_bytes()[:100])
    (root / "episode_0001" / "step_000001.npz").write_bytes(b"")  # zero length: cut before any byte reached disk
    with caplog.at_level(logging.WARNING, logger="edge.recording"):
        obs = list(iter_observations(root))
    assert [(o.episode, o.step) for o in obs] == [(0, 0), (0, 1), (1, 0)]
    assert "step_000002.npz" in caplog.text and "step_000001.npz" in caplog.text


def test_a_damaged_step_in_the_middle_names_the_file_and_the_fix(tmp_path):
    root = _record(tmp_path / "rec")
    bad = root / "episode_0000" / "step_000001.npz"
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"step_000001.npz is unreadable .*Fix: delete .*step_000001.npz"):
        list(iter_observations(root))


def test_a_step_without_state_names_the_field(tmp_path):
    root = _record(tmp_path / "rec")
    bad = root / "episode_0001" / "step_000001.npz"  # even as the last step: it is readable, but incomplete
    np.savez(bad, image_0=np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ConfigError, match=r"step_000001.npz: no `state` array .*Fix: delete"):
        list(iter_observations(root))
    np.savez(bad, image_0=np.zeros((8, 8), np.uint8), state=np.zeros(7))
    with pytest.raises(ConfigError, match=r"`image_0` is uint8 \(8, 8\), expected HxWx3"):
        list(iter_observations(root))


def test_a_lost_episode_json_keeps_the_steps(tmp_path, caplog):
    root = _record(tmp_path / "rec")
    (root / "episode_0000" / "episode.json").unlink()
    (root / "episode_0001" / "episode.json").write_text('{"instruction": "instr')  # cut
    with caplog.at_level(logging.WARNING, logger="edge.recording"):
        obs = list(iter_observations(root))
    assert [o.instruction for o in obs] == ["instruction 0"] * 3 + ["instruction 1"] * 2
    assert "taken from step_000000.npz" in caplog.text
    for step in (root / "episode_0001").glob("step_*.npz"):  # steps of an older version: no instruction in them
        with np.load(step) as d:
            np.savez(step, **{k: d[k] for k in d.files if k != "instruction"})
    with pytest.raises(ConfigError, match=r"episode_0001/episode.json is unreadable and none of its 2 step"):
        list(iter_observations(root))


def test_an_empty_episode_left_by_a_kill_is_skipped(tmp_path):
    root = _record(tmp_path / "rec")
    (root / "episode_0002").mkdir()  # killed between mkdir and episode.json
    assert len(list(iter_observations(root))) == 5
    w = _writer(root)
    assert w.episode == 3


# ---------------------------------------------------------------------------------------------- kill -9


def _episode_steps(rec: Path) -> dict[int, int]:
    """Observations per episode index, read with the public reader (raises on anything it cannot read)."""
    if not any(rec.glob("episode_*/step_*.npz")):
        return {}
    counts: dict[int, int] = {}
    for o in iter_observations(rec):
        counts[o.episode] = counts.get(o.episode, 0) + 1
    return counts


def _newest_episode(rec: Path, known: int, deadline: float) -> Path | None:
    while time.monotonic() < deadline:
        eps = sorted(rec.glob("episode_*")) if rec.is_dir() else []
        if len(eps) > known:
            return eps[-1]
        time.sleep(0.002)
    return None


def _wait_for_step_write(ep: Path, deadline: float) -> bool:
    """Spin until a step's temporary file exists (a step is being written), True if seen."""
    while time.monotonic() < deadline:
        try:
            if any(n.startswith(".step_") for n in os.listdir(ep)):
                return True
        except FileNotFoundError:
            pass
    return False


def _kill_campaign(rec: Path, cache: Path, points: int, seed: int, seconds: float) -> dict:
    env = {**os.environ, "IMAGEWAM_EDGE_CACHE": str(cache)}
    rng = random.Random(seed)
    stats = {"kills": 0, "aimed_mid_write": 0, "left_temp_file": 0, "finished_before_kill": 0, "failures": []}
    span = seconds + 1.0  # set-up (cached engines) + the run
    for i in range(points):
        before = _episode_steps(rec)
        n_eps = len(list(rec.glob("episode_*"))) if rec.is_dir() else 0
        proc = subprocess.Popen([str(EXE), "run", "--seconds", str(seconds), "--record", str(rec)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        t0 = time.monotonic()
        aimed = i % 3 == 2
        if aimed:
            ep = _newest_episode(rec, n_eps, t0 + span + 5)
            hit = ep is not None and _wait_for_step_write(ep, t0 + span + 5)
            stats["aimed_mid_write"] += hit
        else:
            time.sleep(rng.uniform(0.0, span))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            stats["kills"] += 1
        else:
            stats["finished_before_kill"] += 1
        proc.wait(timeout=30)
        stats["left_temp_file"] += any(rec.glob("episode_*/.step_*"))  # killed while a step was being written
        try:
            after = _episode_steps(rec)
        except Exception as exc:  # noqa: BLE001 - any failure to read is the bug this test looks for
            stats["failures"].append(f"kill {i}: {type(exc).__name__}: {exc}")
            continue
        lost = {e: (n, after.get(e)) for e, n in before.items() if after.get(e) != n}
        if lost:
            stats["failures"].append(f"kill {i}: earlier episodes changed {lost}")
        if before and not rec.joinpath("session.json").is_file():
            stats["failures"].append(f"kill {i}: session.json missing")
    _writer(rec)  # the next start removes what the kills left
    if list(rec.glob("episode_*/.step_*")):
        stats["failures"].append(f"stale temporary files: {sorted(rec.glob('episode_*/.step_*'))}")
    stats["episodes"] = len(_episode_steps(rec))
    stats["observations"] = sum(_episode_steps(rec).values())
    return stats


def test_kill_9_during_run_record_keeps_every_earlier_episode(default_cache, tmp_path):
    stats = _kill_campaign(tmp_path / "rec", default_cache, points=3, seed=12, seconds=1.5)
    assert stats["failures"] == []
    read_session(tmp_path / "rec")


@pytest.mark.slow
def test_kill_9_at_24_points_of_run_record(default_cache, tmp_path):
    stats = _kill_campaign(tmp_path / "rec", default_cache, points=24, seed=2024, seconds=3.0)
    sys.stderr.write(f"\nrun --record kill campaign: {json.dumps(stats)}\n")
    assert stats["failures"] == []
    assert stats["kills"] >= 20 and stats["episodes"] >= 10
