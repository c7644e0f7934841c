"""The onnxruntime backend checks the engine files against manifest.json before loading them (sha256 cached by size,
mtime, ctime and inode, so repeated loads hash nothing) and refuses a flipped byte or a truncated file by name."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.integrity import CACHE_NAME, IntegrityError

EXE = Path(sys.executable).with_name("imagewam-edge")


@pytest.fixture
def engines(sim_engines, tmp_path, monkeypatch):
    """A private copy of the default engines and a private package cache dir (where checksums.json goes)."""
    monkeypatch.setenv("IMAGEWAM_EDGE_CACHE", str(tmp_path / "cache"))
    return Path(shutil.copytree(sim_engines, tmp_path / "engines"))


def _load(engines):
    from edge.engines import load_engine_policy

    return load_engine_policy(engines)


def _flip(path: Path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if at is None else at] ^= 0x01
    path.write_bytes(bytes(data))


def test_repeated_loads_use_the_checksum_cache(engines, tmp_path):
    first = _load(engines).backend.verification
    assert first == {"vision_encoder.onnx": "hashed", "prefill.onnx": "hashed", "denoise_step.onnx": "hashed"}
    cache = json.loads((tmp_path / "cache" / CACHE_NAME).read_text())
    assert str((engines / "prefill.onnx").resolve()) in cache["files"]
    assert set(_load(engines).backend.verification.values()) == {"cached"}
    os.utime(engines / "prefill.onnx")  # touched: hashed again, the others still cached
    assert _load(engines).backend.verification["prefill.onnx"] == "hashed"


def test_a_flipped_weight_byte_is_refused_with_the_fix(engines):
    _load(engines)  # verified and cached first: the cache must not hide the change
    _flip(engines / "prefill.onnx")
    with pytest.raises(IntegrityError) as err:
        _load(engines)
    msg = str(err.value)
    expected = json.loads((engines / "manifest.json").read_text())["files"]["prefill.onnx"]
    assert str(engines / "prefill.onnx") in msg and f"expected {expected}, found " in msg
    assert "export it again" in msg and "copy the engines directory / bundle again" in msg


def test_a_same_size_same_mtime_replacement_is_still_caught(engines):
    path = engines / "denoise_step.onnx"
    _load(engines)
    st = path.stat()
    _flip(path, at=st.st_size - 10)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # `cp -p` / `rsync -t` keep size and mtime
    with pytest.raises(IntegrityError, match="denoise_step.onnx does not match manifest.json"):
        _load(engines)


def test_a_truncated_onnx_without_manifest_gives_a_typed_error(engines):
    (engines / "manifest.json").unlink()
    path = engines / "vision_encoder.onnx"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(IntegrityError, match=r"vision_encoder.onnx: onnxruntime .* cannot load it .*truncated.*Fix"):
        _load(engines)


def test_a_truncated_onnx_with_manifest_is_caught_by_the_checksum(engines):
    path = engines / "vision_encoder.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(IntegrityError, match=r"vision_encoder.onnx does not match .*\(1000 bytes\).*truncated"):
        _load(engines)


def test_a_broken_cache_never_breaks_loading(engines, tmp_path, monkeypatch, caplog):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / CACHE_NAME).write_text('{"format": 1, "files": {')  # cut
    assert set(_load(engines).backend.verification.values()) == {"hashed"}
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("IMAGEWAM_EDGE_CACHE", str(blocker))  # the cache cannot be written at all
    assert set(_load(engines).backend.verification.values()) == {"hashed"}
    assert "could not write the checksum cache" in caplog.text


def test_a_damaged_manifest_is_named(engines):
    (engines / "manifest.json").write_text('{"files": {"prefill.onnx": "ab')
    with pytest.raises(IntegrityError, match=r"manifest.json is not valid JSON .*Fix: export it again"):
        _load(engines)


def test_the_cli_refuses_a_corrupted_engine_without_a_traceback(engines, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "cam.png")
    _flip(engines / "denoise_step.onnx")
    r = subprocess.run([str(EXE), "infer", "--engines", str(engines), "--backend", "onnxruntime",
                        "--image", str(tmp_path / "cam.png"), "--state",
                        "0,0,0,0,0,0,0", "--instruction", "move to the red block"], capture_output=True, text=True,
                       env={**os.environ, "IMAGEWAM_EDGE_CACHE": str(tmp_path / "cache")}, timeout=120)
    assert r.returncode != 0 and "denoise_step.onnx does not match manifest.json" in r.stderr
    assert "Traceback" not in r.stderr
