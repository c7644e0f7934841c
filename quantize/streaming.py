"""Writing multi-GB checkpoints one tensor at a time (never the whole model in RAM): a `torch.save`-compatible
`model.pt` writer and a safetensors writer, both fed by a function that makes each tensor when its turn comes,
plus the random initialisation the demo checkpoints use (unit-ish activations at any width) and the process's
peak resident memory.

`save_torch_streamed` writes the same zip layout as `torch.save` (data.pkl, then one `data/<key>` record per
storage, aligned so `torch.load(..., mmap=True)` maps them): the pickle is written first from the shapes alone,
then every storage is made, written and dropped in turn. Entries that are the same tensor object share one
storage, as `nn.Module` aliasing produces (the official checkpoints' `mixtures.video.double_blocks.*` keys)."""
from __future__ import annotations

import collections
import json
import pickle
import struct
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from .memory import current_rss_bytes, peak_rss_bytes, release_memory, trim_heap  # noqa: F401  (re-exported)

_STORAGE_TYPES = {torch.float32: "FloatStorage", torch.bfloat16: "BFloat16Storage", torch.float16: "HalfStorage",
                  torch.int64: "LongStorage", torch.int32: "IntStorage", torch.uint8: "ByteStorage"}
_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int64: "I64"}


class _Storage:
    """Placeholder pickled as a torch storage reference (the data follows in its own record)."""

    def __init__(self, key: str, dtype: torch.dtype, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel


class _Tensor:
    """Pickles as `torch._utils._rebuild_tensor_v2(storage, 0, shape, stride, False, OrderedDict())`, as torch.save."""

    def __init__(self, storage: _Storage, shape: tuple[int, ...]):
        self.storage, self.shape = storage, tuple(int(s) for s in shape)

    def __reduce_ex__(self, protocol):
        stride, acc = [], 1
        for s in reversed(self.shape):
            stride.append(acc)
            acc *= s
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, 0, self.shape, tuple(reversed(stride)), False, collections.OrderedDict()))


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", getattr(torch, _STORAGE_TYPES[obj.dtype]), obj.key, "cpu", obj.numel)
        return None


def save_torch_streamed(path: str | Path, payload: dict, make: Callable[[str, torch.Tensor], torch.Tensor],
                        progress: Callable[[int, int, int], None] | None = None) -> int:
    """Write `payload` (nested dicts/lists of scalars and tensors, typically meta tensors giving shape and dtype) as
    `torch.save` would, calling `make(name, template)` for each distinct tensor in turn; `name` is the first key
    path that reaches it ("mot/mixtures.video.transformer.img_in.weight"). Entries holding the same tensor object
    share one storage. Returns the bytes of tensor data written; `progress(done, total, bytes)` after each tensor."""
    storages: dict[int, tuple[_Storage, str, torch.Tensor]] = {}

    def convert(obj, name: str):
        if isinstance(obj, torch.Tensor):
            if id(obj) not in storages:
                if obj.dtype not in _STORAGE_TYPES:
                    raise TypeError(f"{name}: dtype {obj.dtype} is not supported by the streamed writer")
                storages[id(obj)] = (_Storage(str(len(storages)), obj.dtype, obj.numel()), name, obj)
            return _Tensor(storages[id(obj)][0], tuple(obj.shape))
        if isinstance(obj, dict):
            return {k: convert(v, f"{name}/{k}" if name else str(k)) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(convert(v, f"{name}/{i}") for i, v in enumerate(obj))
        return obj

    tree = convert(payload, "")
    import io

    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(tree)
    data = buf.getvalue()
    written, total = 0, len(storages)
    with torch.serialization._open_zipfile_writer(str(path)) as zf:
        zf.write_record("data.pkl", data, len(data))
        zf.write_record(".format_version", "1", 1)
        alignment = str(torch.serialization._get_storage_alignment())
        zf.write_record(".storage_alignment", alignment, len(alignment))
        zf.write_record("byteorder", sys.byteorder, len(sys.byteorder))
        for i, (storage, name, template) in enumerate(storages.values(), 1):
            tensor = make(name, template)
            if tuple(tensor.shape) != tuple(template.shape) or tensor.dtype != template.dtype:
                raise ValueError(f"{name}: made {tuple(tensor.shape)} {tensor.dtype}, expected "
                                 f"{tuple(template.shape)} {template.dtype}")
            tensor = tensor.contiguous()
            nbytes = tensor.numel() * tensor.element_size()
            zf.write_record(f"data/{storage.key}", tensor.untyped_storage(), nbytes)
            written += nbytes
            del tensor
            trim_heap()
            if progress:
                progress(i, total, written)
    return written


def save_safetensors_streamed(path: str | Path, tensors: dict[str, torch.Tensor],
                              make: Callable[[str, torch.Tensor], torch.Tensor], metadata: dict | None = None,
                              progress: Callable[[int, int, int], None] | None = None) -> int:
    """A safetensors file from templates (shape/dtype, e.g. meta tensors), made and written one at a time."""
    header, offset = {"__metadata__": {k: str(v) for k, v in (metadata or {"format": "pt"}).items()}}, 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        header[name] = {"dtype": _SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    written = 0
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for i, (name, template) in enumerate(tensors.items(), 1):
            tensor = make(name, template).to(template.dtype).contiguous()
            if tuple(tensor.shape) != tuple(template.shape):
                raise ValueError(f"{name}: made {tuple(tensor.shape)}, expected {tuple(template.shape)}")
            f.write(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))  # no copy
            written += tensor.numel() * tensor.element_size()
            del tensor
            trim_heap()
            if progress:
                progress(i, len(tensors), written)
    return written


class RandomInit:
    """Demo weights made one tensor at a time, deterministic in the seed and the order of the calls: matrices
    N(0, 1/fan_in) (unit-ish activations at any width), norm scales 1 + 0.2 N(0, 1), other vectors 0.1 N(0, 1)
    (the rule of quantize.demo._randomise). Generated in float32 in row chunks, stored in the template's dtype."""

    CHUNK = 1 << 24  # elements generated at a time (64 MB of float32)

    def __init__(self, seed: int, matrix_std: Callable[[str, torch.Tensor], float] | None = None):
        self.gen = torch.Generator().manual_seed(int(seed))
        self.matrix_std = matrix_std

    def __call__(self, name: str, template: torch.Tensor) -> torch.Tensor:
        out = torch.empty(template.shape, dtype=template.dtype)
        if template.ndim == 1:
            noise = torch.randn(template.shape, generator=self.gen)
            parent = name.rsplit(".", 2)[-2] if name.count(".") else ""
            is_scale = name.endswith("scale") or ("norm" in parent and name.endswith("weight"))
            out.copy_(1.0 + 0.2 * noise if is_scale else 0.1 * noise)
            return out
        fan_in = template.numel() // max(1, template.shape[0])
        std = self.matrix_std(name, template) if self.matrix_std else max(1, fan_in) ** -0.5
        flat = out.view(template.shape[0], -1)
        rows = max(1, self.CHUNK // max(1, flat.shape[1]))
        for r in range(0, flat.shape[0], rows):
            chunk = torch.randn((min(rows, flat.shape[0] - r), flat.shape[1]), generator=self.gen)
            flat[r : r + chunk.shape[0]].copy_(chunk.mul_(std))
        return out


class Progress:
    """Throttled progress lines: at most one every `every` seconds, plus the last."""

    def __init__(self, say: Callable[[str], None], what: str, every: float = 5.0):
        self.say, self.what, self.every = say, what, every
        self.t0 = self.last = time.monotonic()

    def __call__(self, done: int, total: int, nbytes: int) -> None:
        now = time.monotonic()
        if done == total or now - self.last >= self.every:
            self.last = now
            rate = nbytes / max(now - self.t0, 1e-9) / 1e6
            self.say(f"      {self.what}: {done}/{total} tensors, {nbytes / 1e9:.2f} GB, {now - self.t0:.0f} s "
                     f"({rate:.0f} MB/s), peak RSS {peak_rss_bytes() / 2**30:.2f} GiB")
