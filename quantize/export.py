"""`imagewam-edge export`: one ONNX file per engine with named tensors, explicit (symbolic) shapes and a metadata
JSON beside each; the export checks itself against PyTorch with onnxruntime.

Output directory (the "engines" directory the runtime reads):
    policy.json            PolicySpec (variant, dims, horizon, steps, canvas, text encoder identity)
    dataset_stats.json     copied from the checkpoint
    prompts.npz            prompt-embedding cache for the instructions given with --instruction and those of
                           CHECKPOINT/prompts.npz
    <component>.onnx (+ .onnx.data for large models) and <component>.json (metadata)
    manifest.json          kind, precision, checksums of every file, source checksums, versions
Built in a sibling staging directory and swapped in complete (edge/atomic.py): an interrupted export leaves the
previous OUT as it was.

Memory (a real-size checkpoint is 9-20 GB of bf16): the checkpoint stays memory-mapped in its stored dtype; the
prompt cache's text encoder is loaded in its stored dtype (bf16 in the releases) and released before the backbone
is touched; each graph is traced on a meta twin and its float32 weights are written straight from the stored
tensors, one at a time (quantize/lowmem.py); the float32 torch reference runs block by block; the checkpoint is
released before onnxruntime checks the files, one component at a time. Peak: about the larger of the stored
checkpoint and one component's float32 weights. The run ends with its peak RSS and wall time.
"""
from __future__ import annotations

import json
import logging
import platform
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edge.atomic import replace_dir, staged_dir, write_json
from edge.errors import ImageWAMEdgeError

from .onnx_utils import compare, float64_nodes, sha256_file, stored_tensors, tensor_shapes

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18  # TensorRT 10.3 (JetPack 6) parses up to opset 20; 23 would emit Attention/RMSNormalization
# above this the weights go to <name>.onnx.data, written tensor by tensor (protobuf's 2 GB limit; and a single-file
# ONNX is serialised whole in memory: about 3x its size at once)
EXTERNAL_DATA_BYTES = 256 << 20
PARITY = {"cosine": 0.99999, "rel_max_abs": 1e-4}  # FP32 ONNX vs torch
EXAMPLE_INSTRUCTION = "pick up the red block and place it on the plate"  # the variants' example inputs use it


class ExportError(ImageWAMEdgeError):
    """The export failed or does not match PyTorch."""


def versions() -> dict:
    import onnx
    import onnxruntime
    import torch

    from edge import __version__

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "imagewam_edge": __version__, "python": platform.python_version()}


def _dynamic_shapes(component):
    import torch

    dims: dict[str, object] = {}
    spec = {}
    for name in component.inputs:
        axes = component.dynamic.get(name, {})
        spec[name] = {ax: dims.setdefault(sym, torch.export.Dim(sym, min=2, max=16384))
                      for ax, sym in axes.items() if sym != "one"} or None
    return spec if any(v for v in spec.values()) else None


def export_component(component, out_dir: Path, opset: int, announce: Callable[[dict], None] = lambda counts: None,
                     deferred: list | None = None, progress: Callable[[str], None] = lambda s: None) -> dict:
    """Export, rename nodes, refuse float64, check onnxruntime vs torch. Returns the metadata dict.

    The float32 torch reference runs first, block by block whatever the stored dtype (quantize/lowmem.py), and
    records the parameters it reads: the component's own count and bytes (a component module wraps the whole
    model, so `module.parameters()` would count every component), passed to `announce` before the (long) export.
    The graph is traced on a meta twin and its float32 weights written from the stored tensors one at a time.
    With `deferred` (a list) the onnxruntime check is appended to it as `(meta, check)` instead of run, so the
    caller can release the checkpoint first; `check()` returns the parity dict or raises ExportError."""
    import functools

    import torch

    from .export_spec import parameter_counts, run_counting_parameters
    from .lowmem import export_onnx_lowmem, fp32_streaming

    path = out_dir / f"{component.name}.onnx"
    args = tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in component.inputs.values())
    with fp32_streaming(component.module):
        refs, used = run_counting_parameters(component.module, args)
    refs = tuple(r.float().numpy() for r in (refs if isinstance(refs, tuple) else (refs,)))
    counts = parameter_counts(used)
    announce(counts)
    external = 4 * counts["parameters"] > EXTERNAL_DATA_BYTES  # written in float32
    t0 = time.perf_counter()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" etc.
    try:
        model = export_onnx_lowmem(component.module, component.inputs, component.outputs, path, opset,
                                   _dynamic_shapes(component), external, progress=progress)
    except Exception as exc:
        raise ExportError(f"torch.onnx.export of {component.name} failed: {type(exc).__name__}: {exc}") from exc
    bad = float64_nodes(model)
    if bad:
        raise ExportError(f"{path}: {len(bad)} float64 node(s) ({', '.join(bad[:5])}); onnxruntime >= 1.24 and TensorRT "
                          "reject them: compute them in float32 or pass them as inputs")
    export_s = time.perf_counter() - t0
    meta = {"component": component.name, "file": path.name, "external_data": external, "opset": opset,
            "inputs": tensor_shapes(model.graph.input), "outputs": tensor_shapes(model.graph.output),
            "dynamic": {k: {str(a): s for a, s in v.items()} for k, v in component.dynamic.items()},
            "ranges": {k: list(v) for k, v in component.ranges.items()},
            "example_shapes": {k: list(v.shape) for k, v in component.inputs.items()},
            **counts, "weights_bytes": stored_tensors(model)["bytes"],  # stored in the file (+ constants, - dead code)
            "nodes": len(model.graph.node), "quantize": component.quantize,
            "optional": component.optional, "notes": component.notes, "export_seconds": round(export_s, 2),
            "parity_vs_torch": None}
    check = functools.partial(self_check, component.name, path, list(component.outputs),
                              {k: np.ascontiguousarray(v) for k, v in component.inputs.items()}, refs,
                              meta["weights_bytes"])
    if deferred is None:
        meta["parity_vs_torch"] = check()
    else:
        deferred.append((meta, check))
    return meta


def self_check(name: str, path: Path, outputs: list[str], inputs: dict, refs: tuple, weights_bytes: int) -> dict:
    """onnxruntime on `path` vs the float32 torch reference `refs`; the session holds the weights once and is
    released before returning. Raises ExportError beyond PARITY."""
    from .lowmem import low_memory_session
    from .streaming import release_memory

    session = low_memory_session(path, weights_bytes)
    outs = session.run(outputs, inputs)
    del session
    release_memory()
    parity = {o: compare(r, out) for o, r, out in zip(outputs, refs, outs)}
    for o, p in parity.items():
        if p["cosine"] < PARITY["cosine"] or p["rel_max_abs"] > PARITY["rel_max_abs"]:
            raise ExportError(f"{name}.{o}: onnxruntime differs from torch (cosine {p['cosine']:.6f}, "
                              f"max abs {p['max_abs']:.2e}); limits cosine >= {PARITY['cosine']}, relative max abs <= "
                              f"{PARITY['rel_max_abs']}")
    return parity


def write_text_encoder_files(encoder, out: Path) -> None:
    """What the torch-free text encoder engine needs besides the ONNX: the tokenizer and the exact prompt format."""
    from .model.text_encoder import PROMPT_TEMPLATE

    encoder.tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))
    marker = "\x00CONTENT\x00"
    rendered = encoder.tokenizer.apply_chat_template([{"role": "user", "content": marker}], tokenize=False,
                                                     add_generation_prompt=True, enable_thinking=False)
    (out / "text_encoder_prompt.json").write_text(json.dumps({
        "chat_format": rendered, "content_marker": marker, "prompt_template": PROMPT_TEMPLATE, "task_marker": "{task}",
        "max_length": encoder.max_length, "pad_token_id": int(encoder.tokenizer.pad_token_id),
        "layers": list(encoder.layers), "identity": encoder.identity}, indent=1))


def write_manifest(out: Path, kind: str, precision: str, extra: dict) -> dict:
    files = {f.name: sha256_file(f) for f in sorted(out.iterdir()) if f.is_file() and f.name != "manifest.json"}
    manifest = {"format": 1, "kind": kind, "precision": precision, "files": files, **extra}
    write_json(out / "manifest.json", manifest)
    return manifest


def export_checkpoint(checkpoint: str | Path, out: str | Path, opset: int = DEFAULT_OPSET, canvas: str | None = None,
                      base: str | Path | None = None, instructions: list[str] | None = None,
                      text_encoder: bool = False, progress: Callable[[str], None] = lambda s: None) -> dict:
    """Order (memory, see the module docstring): prompts, [text encoder engine], release the text encoder, the
    other engines (written + torch reference), release the checkpoint, onnxruntime checks one at a time."""
    from .streaming import current_rss_bytes, peak_rss_bytes, release_memory
    from edge.policy_source import PolicySource

    from .variants import export_components, load_source, text_encoder_components

    checkpoint, out = Path(checkpoint), Path(out)
    if not 13 <= opset <= 23:
        raise ExportError(f"--opset {opset}: use 17-20 for TensorRT 10.3 (JetPack 6); at most 23")
    t_start = time.monotonic()

    def rss() -> str:
        return f"RSS {current_rss_bytes() / 2**30:.2f} GiB (peak {peak_rss_bytes() / 2**30:.2f}), {time.monotonic() - t_start:.0f} s"

    def release_text_encoder(loaded) -> None:
        release = getattr(getattr(loaded, "text_encoder", None), "release", None)
        if release is not None:
            release()

    with staged_dir(out) as tmp:  # built beside OUT; the previous OUT stays until the new one is complete
        progress(f"loading {checkpoint} (memory-mapped, stored dtype)")
        loaded = load_source(PolicySource(checkpoint=str(checkpoint), base=None if base is None else str(base),
                                          prompt_cache=str(tmp / "prompts.npz"), canvas=canvas))
        spec, source = loaded.policy.spec, loaded.policy.text_source
        for text in [*(instructions or []), *source.cached_instructions()]:  # + those CHECKPOINT/prompts.npz holds
            loaded.policy.text(text)  # fills prompts.npz
        if (source.lookup(EXAMPLE_INSTRUCTION) is None and not getattr(source.encoder, "available", True)
                and source.cached_instructions()):  # no text encoder in base/: trace on a cached instruction
            source.stand_in(EXAMPLE_INSTRUCTION, source.cached_instructions()[0])
        loaded.policy.text(EXAMPLE_INSTRUCTION)  # the engines' example inputs, as before
        progress(f"      prompt cache: {len(instructions or [])} instruction(s) + the example one; {rss()}")
        metas, deferred = {}, []

        def run(name, comp, label):
            def announce(counts):
                progress(f"{label} exporting {name} ({counts['parameters'] / 1e6:.1f} M params, "
                         f"{counts['parameters_bytes'] / 1e9:.2f} GB stored, {4 * counts['parameters'] / 1e9:.2f} GB "
                         "in float32)")

            meta = export_component(comp, tmp, opset, announce, deferred=deferred, progress=progress)
            meta["variant"], meta["precision"] = spec.variant, "fp32"
            metas[name] = meta
            progress(f"      {name}: {meta['nodes']} nodes, {meta['weights_bytes'] / 1e9:.2f} GB of weights in the "
                     f"file, written in {meta['export_seconds']:.0f} s; {rss()}")

        if text_encoder:  # while the prompt cache's encoder is loaded; off the control path, so numbered apart
            text_components = text_encoder_components(spec.variant, loaded)
            for name in list(text_components):
                run(name, text_components.pop(name), "[+]")
            write_text_encoder_files(loaded.text_encoder, tmp)
        release_text_encoder(loaded)  # before the backbone is touched
        components = export_components(spec.variant, loaded)
        for i, name in enumerate(list(components), 1):
            run(name, components.pop(name), f"[{i}/{i + len(components)}]")
        stats_path, step = loaded.checkpoint.stats_path, loaded.checkpoint.step
        del loaded, components
        release_memory()
        progress(f"checkpoint released; onnxruntime checks one engine at a time; {rss()}")
        for meta, check in deferred:
            meta["parity_vs_torch"] = check()
            (tmp / f"{meta['component']}.json").write_text(json.dumps(meta, indent=1))
            parity = meta["parity_vs_torch"].values()
            progress(f"      {meta['component']}: onnxruntime vs torch (float32) cosine "
                     f"{min(p['cosine'] for p in parity):.7f}, max abs {max(p['max_abs'] for p in parity):.2e}; {rss()}")
        deferred.clear()
        shutil.copy(stats_path, tmp / "dataset_stats.json")
        (tmp / "policy.json").write_text(json.dumps(spec.to_dict(), indent=1))
        source = {"checkpoint": str(checkpoint.resolve()), "model.pt": sha256_file(checkpoint / "model.pt"),
                  "dataset_stats.json": sha256_file(checkpoint / "dataset_stats.json"), "step": step}
        manifest = write_manifest(tmp, "onnx", "fp32", {"variant": spec.variant, "source": source, "versions": versions(),
                                                        "components": sorted(m for m in metas if not metas[m]["optional"]),
                                                        "optional_components": sorted(m for m in metas if metas[m]["optional"])})
        replace_dir(tmp, out)
    resources = {"peak_rss_bytes": peak_rss_bytes(), "wall_seconds": round(time.monotonic() - t_start, 1),
                 "onnx_bytes": sum(f.stat().st_size for f in out.iterdir() if f.is_file())}
    progress(f"export done in {resources['wall_seconds']:.0f} s, peak RSS {resources['peak_rss_bytes'] / 2**30:.2f} GiB "
             f"(ru_maxrss), {resources['onnx_bytes'] / 1e9:.2f} GB written")
    return {"out": str(out), "components": metas, "manifest": manifest, "resources": resources}
