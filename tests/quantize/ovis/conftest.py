import pytest


@pytest.fixture(scope="session")
def ovis_checkpoint(tmp_path_factory):
    """A tiny random-weight ImageWAM Ovis-U1 release directory with its tiny base release (written once)."""
    pytest.importorskip("torch")
    from quantize.model.ovis_u1.demo import write_demo_checkpoint

    return write_demo_checkpoint(tmp_path_factory.mktemp("ovis") / "demo", variant="ovis-u1-tiny", embodiment="libero")
