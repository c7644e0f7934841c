"""Memory-bounded export helpers: a real-size checkpoint (9 GB of bf16 for FLUX.2-4B) is exported without ever
holding a float32 copy of the model.

- `export_onnx_lowmem`: the graph is traced on a META twin of the module (its parameters and buffers swapped for
  float32 meta tensors for the duration: no memory), then every initializer is filled lazily from the
  real tensor, cast to float32 one tensor at a time while the file is written (external data straight from the
  tensors; no `onnx.load(..., load_external_data=True)` afterwards).
- `fp32_streaming`: the float32 torch reference of a bf16 module layer by layer: each large layer (Linear,
  Conv, Embedding) is cast only while it runs, the small ones (norms, embedders) for the duration. Parameter objects keep their identity (their `.data` is swapped), so hooks and parameter
  bookkeeping see the module unchanged.
- `low_memory_session`: an onnxruntime session that does not duplicate the weights (no pre-packing, no arena,
  no constant folding of weight transposes)."""
from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

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


LARGE_LEAF = 1 << 20  # elements: a module holding more directly is cast only while it runs


def _units(module: nn.Module) -> list[nn.Module]:
    """The modules cast to float32 only while they run: those holding more than LARGE_LEAF parameter elements
    directly (the Linear / Conv / Embedding layers that make up the weights). The rest (norms, small layers whose
    `.weight.dtype` the forward code reads to pick its compute dtype) is cast for the whole run."""
    return [mod for mod in module.modules() if sum(p.numel() for p in mod.parameters(recurse=False)) > LARGE_LEAF]


@contextlib.contextmanager
def fp32_streaming(module: nn.Module) -> Iterator[None]:
    """Run `module` in float32 with at most one large layer's float32 copy alive (see the module docstring).
    A float32 module is left untouched (no copy)."""
    if all(p.dtype == torch.float32 for p in module.parameters()) and \
            all(b.dtype == torch.float32 or not _floating(b) for b in module.buffers()):
        yield
        return
    units = _units(module)
    in_units = {id(t) for u in units for t in [*u.parameters(), *u.buffers()]}
    outside: list[tuple[nn.Parameter, torch.Tensor]] = []
    outside_buffers: list[tuple[dict, str, torch.Tensor]] = []
    handles = []

    def cast_unit(unit, *_):
        unit._fp32_saved = [(p, p.data) for p in unit.parameters() if _floating(p) and p.dtype != torch.float32]
        for p, data in unit._fp32_saved:
            p.data = data.float()
        unit._fp32_buffers = []
        for mod in unit.modules():
            for name, b in list(mod._buffers.items()):
                if b is not None and _floating(b) and b.dtype != torch.float32:
                    unit._fp32_buffers.append((mod._buffers, name, b))
                    mod._buffers[name] = b.float()

    def restore_unit(unit, *_):
        for p, data in getattr(unit, "_fp32_saved", []):
            p.data = data
        for store, name, b in getattr(unit, "_fp32_buffers", []):
            store[name] = b
        unit._fp32_saved, unit._fp32_buffers = [], []

    try:
        for p in module.parameters():
            if id(p) not in in_units and _floating(p) and p.dtype != torch.float32:
                outside.append((p, p.data))
                p.data = p.data.float()
        for mod in module.modules():
            for name, b in list(mod._buffers.items()):
                if b is not None and id(b) not in in_units and _floating(b) and b.dtype != torch.float32:
                    outside_buffers.append((mod._buffers, name, b))
                    mod._buffers[name] = b.float()
        for unit in units:
            handles.append(unit.register_forward_pre_hook(cast_unit))
            handles.append(unit.register_forward_hook(restore_unit, always_call=True))
        yield
    finally:
        for h in handles:
            h.remove()
        for unit in units:
            restore_unit(unit)
        for p, data in outside:
            p.data = data
        for store, name, b in outside_buffers:
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

    def __init__(self, limit: int = 8192):
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
    from .streaming import Progress

    report = Progress(progress or (lambda s: None), path.name + ".data", every=10.0)
    written = [0, 0]

    def callback(tensor, info):
        written[0] += 1
        written[1] += int(np.prod(tensor.shape.numpy(), dtype=np.int64)) * tensor.dtype.itemsize
        report(written[0], info.total, written[1])

    # serial (one float32 tensor made at a time); 64 KiB-aligned tensors, which onnxruntime can map in place
    ir.save(program.model, str(path), external_data=path.name + ".data", callback=callback, max_workers=1,
            alignment=65536)


def low_memory_session(path: Path, weights_bytes: int = 0):
    """An onnxruntime CPU session that holds the weights once: no pre-packed copies, no arena. onnxruntime maps
    external data from the file; with basic optimisations it folds the weight transposes into new (anonymous)
    tensors and drops the mapped originals (the lowest peak: ~1x the float32 weights, measured), which is chosen
    while the weights fit in 60% of the available memory; beyond that, no optimisation: the weights stay in the
    file mapping, which the kernel can page out and back, so a smaller machine is slower instead of killed."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.disable_prepacking", "1")
    so.enable_cpu_mem_arena = False
    fits = weights_bytes < 0.6 * available_memory_bytes()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if fits
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def available_memory_bytes() -> int:
    """MemAvailable (Linux), else a large number (no limit known)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 50
