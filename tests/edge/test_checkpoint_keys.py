"""A checkpoint's tensor names and shapes read without torch and without its tensor data (variant detection)."""
import zipfile

import pytest

from edge.checkpoint_keys import state_shapes
from edge.errors import CheckpointError


def test_names_and_shapes_equal_torch_load(demo_checkpoint):
    torch = pytest.importorskip("torch")
    full = torch.load(demo_checkpoint / "model.pt", map_location="cpu", weights_only=True)["mot"]
    shapes = state_shapes(demo_checkpoint / "model.pt")
    assert shapes == {k: tuple(v.shape) for k, v in full.items()}


def test_tensor_data_is_never_read(demo_checkpoint, tmp_path):
    """The same archive with every tensor record emptied still gives all names: only data.pkl is read."""
    src = demo_checkpoint / "model.pt"
    out = tmp_path / "model.pt"
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(out, "w") as b:
        for info in a.infolist():
            b.writestr(info, a.read(info) if info.filename.endswith(".pkl") or "/data/" not in info.filename else b"")
    assert state_shapes(out) == state_shapes(src)


def test_not_a_checkpoint_is_named(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="model.pt is not a readable torch checkpoint"):
        state_shapes(bad)
