"""The robot side runs on engines with nothing of the workstation side: `run` in a process where importing
`quantize` or `torch` raises (docs/architecture.md: the core and the app never import them)."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('quantize', 'torch'):
            raise ModuleNotFoundError(f'{name} is not installed here (blocked by the test)', name=name)
sys.meta_path.insert(0, Block())
from edge.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_run_on_engines_without_quantize_or_torch(default_cache, tmp_path):
    env = {**os.environ, "IMAGEWAM_EDGE_CACHE": str(default_cache), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", BLOCK, "run", "--seconds", "3", "--json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["chunks"] > 0 and summary["commands_sent"] > 0, summary
