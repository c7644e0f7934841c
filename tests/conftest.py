import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the tests also run from a plain checkout
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory):
    """A tiny random-weight ImageWAM FLUX.2 checkpoint in the official layout (written once per session)."""
    pytest.importorskip("torch")
    from quantize.demo import write_demo_checkpoint

    return write_demo_checkpoint(tmp_path_factory.mktemp("ckpt") / "demo", variant="flux2-tiny", embodiment="libero")
