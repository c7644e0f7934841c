"""Memory-bounded export helpers: a real-size checkpoint (9 GB of bf16 for FLUX.2-4B) is exported without ever
holding a float32 copy of the model.

- `export_onnx_lowmem`: the graph is traced on a META twin of the module (its parameters and buffers swapped for
  float32 meta tensors for the duration: no memory), then every initializer is filled lazily from the
  real tensor, cast to float32 one tensor at a time while the file is written (external data straight from the
  tensors; no `onnx.load(..., load_external_data=True)` afterwards).
- `fp32_streaming`: the float32 torch reference of a bf16 module, one weight at a time: a torch function mode
  hands every op a float32 copy of the weights it receives (dropped after the op) and reports their dtype as
  float32, so the module computes as a float32 module would (bit for bit: checked against a float32 copy). The
  parameters themselves are not touched, so parameter bookkeeping (export_spec.ParameterUse) sees them as stored.
- `low_memory_session`: an onnxruntime session that holds the weights once (no pre-packed copies, no arena);
  large files stay memory-mapped so a smaller machine pages instead of failing."""
from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from .memory import available_memory_bytes, low_memory_session  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


def _floating(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


@contextlib.contextmanager
def _on_meta(module: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Replace every parameter and buffer by a float32 (floating) meta tensor of its shape, shared ones once; yields
    {fully qualified name: original tensor}; puts the originals back on exit."""
    originals: dict[str, torch.Tensor] = {}
    swapped: list[tuple[dict, str, torch.Tensor]] = []
    made: dict[int, torch.Tensor] = {}
    try:
        for mod_name, mod in module.named_modules(remove_duplicate=False):
            prefix = mod_name + "." if mod_name else ""
            for store, is_param in ((mod._parameters, True), (mod._buffers, False)):
                for name, t in list(store.items()):
                    if t is None:
                        continue
                    originals.setdefault(prefix + name, t.data if is_param else t)
                    if id(t) not in made:
                        m = _meta(t)
                        made[id(t)] = nn.Parameter(m, requires_grad=False) if is_param else m
                    swapped.append((store, name, t))
                    store[name] = made[id(t)]
        yield originals
    finally:
        for store, name, t in swapped:
            store[name] = t


def _meta(t: torch.Tensor) -> torch.Tensor:
    return torch.empty(t.shape, dtype=torch.float32 if _floating(t) else t.dtype, device="meta")


class _Float32View(torch.overrides.TorchFunctionMode):
    """Every torch function that receives one of `params` gets a float32 copy of it instead (made for that call,
    dropped after it), and `param.dtype` reads float32: the module computes exactly as a float32 module would,
    whichever way its code reaches a weight (a layer's forward, `self.vte.weight[i]`, `weight.dtype` to pick the
    compute dtype), while at most the weights of one call are held in float32."""

    def __init__(self, params: dict[int, torch.Tensor]):
        super().__init__()
        self.params = params

    def _cast(self, a):
        return a.float() if isinstance(a, torch.Tensor) and id(a) in self.params else a

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") == "__get__":
            if getattr(getattr(func, "__self__", None), "__name__", "") == "dtype" and args and id(args[0]) in self.params:
                return torch.float32
            return func(*args, **kwargs)
        if func in _GATHERS and any(id(a) in self.params for a in (*args, *kwargs.values())):
            # rows of a table: gather in the stored dtype, then cast (exact; no float32 copy of the whole table)
            return torch.utils._pytree.tree_map(
                lambda t: t.float() if isinstance(t, torch.Tensor) and _floating(t) else t, func(*args, **kwargs))
        args, kwargs = torch.utils._pytree.tree_map(self._cast, (args, kwargs))
        return func(*args, **kwargs)


_GATHERS = {torch.nn.functional.embedding, torch.Tensor.__getitem__, torch.index_select, torch.Tensor.index_select}


@contextlib.contextmanager
def fp32_streaming(module: nn.Module) -> Iterator[None]:
    """Run `module` in float32 whatever its stored dtype, with at most one call's weights copied to float32 (see
    _Float32View); floating buffers (small) are cast for the duration. A float32 module is left untouched."""
    params = {id(p): p for p in module.parameters() if _floating(p) and p.dtype != torch.float32}
    buffers = [(mod._buffers, name, b) for mod in module.modules() for name, b in mod._buffers.items()
               if b is not None and _floating(b) and b.dtype != torch.float32]
    if not params and not buffers:
        yield
        return
    try:
        for store, name, b in buffers:
            store[name] = b.float()
        with _Float32View(params):
            yield
    finally:
        for store, name, b in buffers:
            store[name] = b


def _lazy(ir, sources: dict[str, torch.Tensor], name: str, dtype, watch: _Watch):
    """An onnx_ir tensor made from `sources[name]` (cast to float32 if floating) only when the file is written.
    It looks the tensor up when called: clearing `sources` afterwards unpins the checkpoint even where a graph
    outlives the export (onnxscript's rewrite rules keep the last graph they matched)."""
    tensor = sources[name]
    torch_dtype = torch.float32 if _floating(tensor) else tensor.dtype

    def make():
        t = sources[name]
        watch.saw(name, t.numel())
        return ir.Tensor(t.detach().to(torch_dtype).contiguous().numpy(), name=name)

    return ir.LazyTensor(make, dtype=dtype, shape=ir.Shape(tuple(tensor.shape)), name=name)


def _fold_weight_transposes(ir, graph) -> int:
    """What onnxscript's constant folding does to `Transpose(weight)` (a weight read by that node only becomes a
    transposed initializer named after the node's output), but lazily: the transposed float32 tensor is made
    when the file is written. Returns the number folded."""
    folded = 0
    for node in list(graph):
        if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 1:
            continue
        src, out = node.inputs[0], node.outputs[0]
        if src is None or not src.is_initializer() or not isinstance(src.const_value, ir.LazyTensor) \
                or len(src.uses()) != 1 or out.is_graph_output() or src.is_graph_output():
            continue
        rank = len(src.shape)
        perm = node.attributes["perm"].as_ints() if "perm" in node.attributes else list(reversed(range(rank)))
        source = src.const_value
        shape = tuple(int(src.shape[p]) for p in perm)

        def make(source=source, perm=tuple(perm), name=out.name):
            return ir.Tensor(np.ascontiguousarray(source.numpy().transpose(perm)), name=name)

        value = ir.Value(name=out.name, type=ir.TensorType(src.dtype), shape=ir.Shape(shape),
                         const_value=ir.LazyTensor(make, dtype=src.dtype, shape=ir.Shape(shape), name=out.name))
        out.replace_all_uses_with(value)
        graph.remove(node, safe=True)
        graph.initializers.pop(src.name)
        graph.register_initializer(value)
        folded += 1
    return folded


class _Watch:
    """Which large weights get made while `active` (the optimizer should make none)."""

    def __init__(self, limit: int = 1 << 22):  # elements (16 MB of float32): smaller ones do not matter
        self.active, self.limit, self.names = False, limit, []

    def saw(self, name: str, size: int) -> None:
        if self.active and size > self.limit:
            self.names.append(name)


def export_onnx_lowmem(module: nn.Module, inputs: dict[str, np.ndarray], output_names: list[str], path: Path,
                       opset: int, dynamic_shapes, external: bool, progress=None):
    """Export `module` (any stored dtype) as a float32 ONNX graph at `path` (weights in `<name>.data` when
    `external`), nodes renamed `n00012_MatMul`; returns the graph-only ModelProto (initializers as external
    references: nothing is read back)."""
    import onnx
    import onnx_ir as ir

    meta_args = tuple(torch.from_numpy(np.ascontiguousarray(v)).to("meta") for v in inputs.values())
    with torch.no_grad(), warnings.catch_warnings(), _on_meta(module) as real:
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, meta_args, input_names=list(inputs), output_names=list(output_names),
                                    opset_version=opset, dynamo=True, dynamic_shapes=dynamic_shapes,
                                    optimize=False, verbose=False)
    try:
        _fill_and_save(ir, program, real, path, external, progress)
    finally:
        real.clear()  # the graph's lazy tensors no longer reach the checkpoint
    del program
    return onnx.load(str(path), load_external_data=False)


def _fill_and_save(ir, program, real: dict, path: Path, external: bool, progress) -> None:
    missing, watch = [], _Watch()
    for name, value in program.model.graph.initializers.items():
        cv = value.const_value
        raw = getattr(cv, "raw", None)
        if cv is not None and not (isinstance(raw, torch.Tensor) and raw.is_meta):
            continue  # a constant the exporter computed
        if name not in real:
            missing.append(name)
            continue
        value.const_value = _lazy(ir, real, name, value.dtype, watch)
    if missing:
        raise RuntimeError(f"initializers without a source tensor: {missing[:5]}")
    _fold_weight_transposes(ir, program.model.graph)
    watch.active = True
    program.optimize()  # the rest of torch.onnx.export(optimize=True)'s constant folding (small constants)
    watch.active = False
    if watch.names:
        log.warning("the optimizer made %d large weight(s) (%s ...): the export holds them in memory",
                    len(watch.names), ", ".join(watch.names[:3]))
    for i, node in enumerate(program.model.graph):
        node.name = f"n{i:05d}_{node.op_type}"
    for f in path.parent.glob(path.name + "*"):
        f.unlink()
    if not external:
        ir.save(program.model, str(path))
        return
    from .streaming import Progress, trim_heap

    report = Progress(progress or (lambda s: None), path.name + ".data", every=10.0)
    written = [0, 0]

    def callback(tensor, info):
        trim_heap()  # the previous tensor's float32 copy is gone: give its pages back
        written[0] += 1
        written[1] += int(np.prod(tensor.shape.numpy(), dtype=np.int64)) * tensor.dtype.itemsize
        report(written[0], info.total, written[1])

    # serial (one float32 tensor made at a time); 64 KiB-aligned tensors, which onnxruntime can map in place
    ir.save(program.model, str(path), external_data=path.name + ".data", callback=callback, max_workers=1,
            alignment=65536)
