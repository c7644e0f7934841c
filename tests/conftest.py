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


@pytest.fixture(scope="session")
def demo_engines(demo_checkpoint, tmp_path_factory):
    """The demo checkpoint exported to FP32 ONNX engines (with the instruction the tests use in the prompt cache)."""
    from quantize.export import export_checkpoint

    return Path(export_checkpoint(demo_checkpoint, tmp_path_factory.mktemp("engines") / "fp32",
                                  instructions=["pick up the red block"], text_encoder=True)["out"])
