"""The README, pasted top to bottom on a fresh clone (issue 17).

Every ```bash block of README.md runs in order, as one bash script per block (`set -e`), in a temporary copy of the
working tree (what a fresh clone holds: tracked files and untracked files git does not ignore) with the repository's
virtual environment on PATH, IMAGEWAM_EDGE_CACHE / IMAGEWAM_CALIB_DIR / TMPDIR in temporary directories and the
blocks' /tmp/ paths moved under the test's own directory. Jobs a block leaves in the background (`cmd &`) are stopped
when the block ends. An HTML comment on the line before a block (blank lines between are fine) marks it:

    <!-- readme-test: slow -->            runs only under `pytest -m slow tests/test_readme.py` (with every other block)
    <!-- readme-test: hardware -->        needs a camera, an arm, a Jetson, TensorRT or a GPU: every command of the
                                          block must exit non-zero with an error message and no traceback
    <!-- readme-test: skip REASON -->     not run (set-up commands CI already runs); the reason is required

Unmarked blocks run in the default suite. The test runs commands; it never compares README text. `-s` shows each
block's time as it goes (the figures behind the README's durations).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent
KINDS = ("run", "slow", "hardware", "skip")
MARKER = re.compile(r"^\s*<!--\s*readme-test:\s*(\S+)\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
BLOCK_TIMEOUT_S = {"run": 900, "slow": 5400, "hardware": 300}


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    kind: str
    note: str
    script: str
    commands: list[str] = field(default_factory=list)  # logical lines (continuations joined), comments dropped

    def name(self) -> str:
        first = self.commands[0] if self.commands else ""
        return f"README.md:{self.line} ({self.kind}) {first[:70]}"


class ReadmeMarkerError(ValueError):
    """A readme-test marker the test does not know, or one not directly above a bash block."""


def parse_readme(text: str) -> list[Block]:
    """The ```bash blocks of `text` in order, each with the marker on the line before it (kind 'run' if none)."""
    lines = text.splitlines()
    blocks, i, pending = [], 0, None
    while i < len(lines):
        line = lines[i]
        m = MARKER.match(line)
        if m:
            kind, note = m.group(1), m.group(2)
            if kind not in KINDS[1:]:
                raise ReadmeMarkerError(f"README.md:{i + 1}: unknown readme-test marker {kind!r} "
                                        f"(use one of {', '.join(KINDS[1:])})")
            if kind == "skip" and not note:
                raise ReadmeMarkerError(f"README.md:{i + 1}: `readme-test: skip` needs a reason")
            pending = (i + 1, kind, note)
            i += 1
            continue
        f = FENCE.match(line)
        if f:
            indent, lang = f.group(1), f.group(2)
            body, j = [], i + 1
            while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
                body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
                j += 1
            if lang == "bash":
                kind, note = "run", ""
                if pending is not None:  # only blank lines between the marker and its fence
                    kind, note = pending[1], pending[2]
                script = "\n".join(body) + "\n"
                blocks.append(Block(i + 1, kind, note, script, logical_commands(script)))
            elif pending is not None:
                raise ReadmeMarkerError(f"README.md:{pending[0]}: readme-test marker above a non-bash block")
            pending, i = None, j + 1
            continue
        if pending is not None and line.strip():
            raise ReadmeMarkerError(f"README.md:{pending[0]}: readme-test marker not directly above a ```bash block")
        i += 1
    return blocks


def logical_commands(script: str) -> list[str]:
    """The commands of a block: backslash continuations joined, blank and comment-only lines dropped."""
    out, cur = [], ""
    for raw in script.splitlines():
        if raw.rstrip().endswith("\\"):
            cur += raw.rstrip()[:-1] + " "
            continue
        cur += raw
        if cur.strip() and not cur.strip().startswith("#"):
            out.append(cur.strip())
        cur = ""
    if cur.strip():
        out.append(cur.strip())
    return out


def _git_files(*args: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", *args], cwd=ROOT, check=True, capture_output=True).stdout
    return [f for f in out.decode().split("\0") if f]


def fresh_clone(dest: Path) -> Path:
    """Copy what a clone of the working tree holds into dest: the tracked files as they are now, and the untracked
    files git does not ignore (new sources not committed yet) up to 5 MB each (not someone's stray outputs)."""
    tracked = _git_files("--cached")
    untracked = [f for f in _git_files("--others", "--exclude-standard")
                 if (ROOT / f).is_file() and (ROOT / f).stat().st_size <= 5 * 2**20]
    for rel in tracked + untracked:
        src = ROOT / rel
        if not src.is_file():  # deleted in the working tree, or a submodule
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    return dest


def readme_env(tmp: Path, clone: Path) -> dict:
    (tmp / "tmp").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGEWAM_", "PYTEST_"))}
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}", PYTHONPATH=str(clone),
               IMAGEWAM_EDGE_CACHE=str(tmp / "cache"), IMAGEWAM_CALIB_DIR=str(tmp / "calib"),
               VIRTUAL_ENV=str(VENV_BIN.parent), PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1",
               MPLBACKEND="Agg", TMPDIR=str(tmp / "tmp"))
    return env


def _run(script: str, cwd: Path, env: dict, timeout: float) -> tuple[int, str, float]:
    """Run a bash script in its own session; whatever it left running (`cmd &`) is stopped when it ends. Output goes
    to a file, not a pipe: a background job keeps a pipe open after the script is done."""
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(["bash", "-c", script], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = 124
        finally:
            for sig in (signal.SIGTERM, signal.SIGKILL):  # the block's background jobs (e.g. `arm sim ... &`)
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                time.sleep(0.5)
            proc.wait()
        out.seek(0)
        text = out.read().decode(errors="replace")
    if rc == 124:
        text += f"\n[timed out after {timeout:.0f} s]"
    return rc, text, time.monotonic() - t0


PRELUDE = ("set -eo pipefail\n"
           "trap 'echo \"README command failed (exit $?): $BASH_COMMAND\" >&2' ERR\n")


def run_block(block: Block, cwd: Path, env: dict) -> float:
    if block.kind == "hardware":
        return check_hardware_block(block, cwd, env)
    rc, out, dt = _run(PRELUDE + block.script, cwd, env, BLOCK_TIMEOUT_S[block.kind])
    if rc != 0:
        pytest.fail(f"{block.name()} failed with exit code {rc} after {dt:.0f} s:\n{block.script}\n--- output "
                    f"(last 4000 chars) ---\n{out[-4000:]}", pytrace=False)
    return dt


def check_hardware_block(block: Block, cwd: Path, env: dict) -> float:
    """Without the hardware each command must fail: non-zero exit, an error message, no Python traceback."""
    total = 0.0
    for cmd in block.commands:
        rc, out, dt = _run(cmd, cwd, env, BLOCK_TIMEOUT_S["hardware"])
        total += dt
        text = out.strip()
        if rc == 0:
            pytest.fail(f"{block.name()}: `{cmd}` needs hardware but succeeded without it:\n{text[-2000:]}",
                        pytrace=False)
        if rc == 124 or "Traceback (most recent call last)" in text or not text:
            pytest.fail(f"{block.name()}: `{cmd}` must fail with a clear error, got exit {rc}:\n{text[-3000:]}",
                        pytrace=False)
    return total


def _blocks() -> list[Block]:
    return parse_readme(README.read_text(encoding="utf-8"))


def isolated(block: Block, tmp: Path) -> Block:
    """The block with its /tmp/ paths (e.g. the simulator's --link /tmp/arm0) under this test's own directory, so
    that runs side by side do not share them."""
    def fix(text: str) -> str:
        return text.replace("/tmp/", f"{tmp}/")

    return Block(block.line, block.kind, block.note, fix(block.script), [fix(c) for c in block.commands])


def _run_readme(tmp_path: Path, kinds: set[str]) -> list[tuple[Block, float]]:
    clone = fresh_clone(tmp_path / "clone")
    env = readme_env(tmp_path, clone)
    times = []
    for block in _blocks():
        if block.kind not in kinds:
            continue
        times.append((block, run_block(isolated(block, tmp_path / "tmp"), clone, env)))
        print(f"{times[-1][1]:7.1f} s  {block.name()}", file=sys.stderr, flush=True)
    report = "\n".join(f"{dt:7.1f} s  {b.name()}" for b, dt in times)
    print(f"README blocks run ({sum(dt for _, dt in times):.0f} s):\n{report}", file=sys.stderr)
    return times


def test_readme_markers_parse():
    """Every marker is known and directly above a bash block; skipped blocks say why; the README has runnable ones."""
    blocks = _blocks()
    assert any(b.kind == "run" for b in blocks)
    for b in blocks:
        assert b.commands, f"{b.name()}: empty bash block"
        if b.kind == "skip":
            assert b.note, f"{b.name()}: skip without a reason"


def test_parser_reads_markers_and_continuations():
    text = ("intro\n\n<!-- readme-test: slow -->\n```bash\na --x \\\n    --y  # c\n# only a comment\nb &\n```\n"
            "   ```bash\n   c\n   ```\n<!-- readme-test: skip CI runs it -->\n```bash\nd\n```\n```\nnot bash\n```\n")
    blocks = parse_readme(text)
    assert [(b.kind, b.commands) for b in blocks] == [("slow", ["a --x      --y  # c", "b &"]), ("run", ["c"]),
                                                      ("skip", ["d"])]
    assert blocks[2].note == "CI runs it"
    with pytest.raises(ReadmeMarkerError, match="unknown"):
        parse_readme("<!-- readme-test: fast -->\n```bash\na\n```\n")
    with pytest.raises(ReadmeMarkerError, match="not directly above"):
        parse_readme("<!-- readme-test: slow -->\ntext\n```bash\na\n```\n")
    with pytest.raises(ReadmeMarkerError, match="reason"):
        parse_readme("<!-- readme-test: skip -->\n```bash\na\n```\n")


def test_hardware_check_fails_a_command_that_succeeds(tmp_path):
    """The hardware check is not a test that cannot fail: a command that works, or crashes with a traceback, fails it."""
    env = readme_env(tmp_path, ROOT)
    with pytest.raises(pytest.fail.Exception, match="succeeded without it"):
        check_hardware_block(Block(1, "hardware", "", "true\n", ["true"]), tmp_path, env)
    with pytest.raises(pytest.fail.Exception, match="clear error"):
        check_hardware_block(Block(1, "hardware", "", "", ["python -c 'raise RuntimeError(1)'"]), tmp_path, env)
    with pytest.raises(pytest.fail.Exception, match="exit code 3"):
        run_block(Block(1, "run", "", "true\nexit 3\necho never\n", ["true", "exit 3"]), tmp_path, env)


def test_readme_fast_part(tmp_path):
    """The unmarked blocks, in order, and the hardware blocks' clear errors (the default suite)."""
    _run_readme(tmp_path, {"run", "hardware"})


@pytest.mark.slow
def test_readme_top_to_bottom(tmp_path):
    """Every block but the skipped ones, in order: what a user pasting the README gets."""
    _run_readme(tmp_path, {"run", "slow", "hardware"})
