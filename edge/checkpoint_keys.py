"""The tensor names of a torch `model.pt` without torch and without reading a byte of tensor data: the zip
archive's `data.pkl` is unpickled with every tensor replaced by its shape, so telling a checkpoint's model variant
apart (FLUX.2 vs Ovis-U1) costs the pickle (a few MB), not the weights (9-19 GB), and works on a torch-free device."""
from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path

from .errors import CheckpointError


class _Shape(tuple):
    """Stands in for a tensor: its shape."""


def _rebuild_tensor(storage, offset, size, stride, *rest):
    return _Shape(size)


def _rebuild_parameter(data, requires_grad=False, hooks=None, *rest):
    return data


class _KeysUnpickler(pickle.Unpickler):
    SAFE = {("collections", "OrderedDict"): collections.OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter}

    def find_class(self, module, name):
        if (module, name) in self.SAFE:
            return self.SAFE[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return name  # a storage type tag; the storage itself is never read
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a plain state dict")

    def persistent_load(self, pid):
        return None  # ('storage', type, key, location, numel): the tensor data stays in the archive


def state_shapes(path: str | Path, entry: str = "mot") -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} of `payload[entry]` in a torch zip checkpoint (model.pt), tensors never read."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if pkl is None:
                raise CheckpointError(f"{path} has no data.pkl: not a torch checkpoint saved by torch.save")
            with archive.open(pkl) as f:
                payload = _KeysUnpickler(f).load()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({type(exc).__name__}: {exc}); it must be "
                              "the `model.pt` saved by ImageWAM training") from None
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: {exc}; expected the `model.pt` of ImageWAM training") from None
    if not isinstance(payload, dict) or not isinstance(payload.get(entry), dict):
        raise CheckpointError(f"{path}: expected a dict with a {entry!r} state dict, got {type(payload).__name__}")
    return {str(k): tuple(v) for k, v in payload[entry].items() if isinstance(v, _Shape)}
