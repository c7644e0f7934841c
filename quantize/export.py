"""`imagewam-edge export`: one ONNX file per engine with named tensors, explicit (symbolic) shapes and a metadata
JSON beside each; the export checks itself against PyTorch with onnxruntime.

Output directory (the "engines" directory the runtime reads):
    policy.json            PolicySpec (variant, dims, horizon, steps, canvas, text encoder identity)
    dataset_stats.json     copied from the checkpoint
    prompts.npz            prompt-embedding cache for the instructions given with --instruction
    <component>.onnx (+ .onnx.data for large models) and <component>.json (metadata)
    manifest.json          kind, precision, checksums of every file, source checksums, versions
Built in a sibling staging directory and swapped in complete (edge/atomic.py): an interrupted export leaves the
previous OUT as it was.
"""
from __future__ import annotations

import json
import logging
import platform
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from edge.atomic import replace_dir, staged_dir, write_json
from edge.errors import ImageWAMEdgeError

from .onnx_utils import compare, float64_nodes, rename_nodes_uniquely, sha256_file, stored_tensors, tensor_shapes

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18  # TensorRT 10.3 (JetPack 6) parses up to opset 20; 23 would emit Attention/RMSNormalization
EXTERNAL_DATA_BYTES = 1 << 30  # above this the weights go to <name>.onnx.data (protobuf's 2 GB limit)
PARITY = {"cosine": 0.99999, "rel_max_abs": 1e-4}  # FP32 ONNX vs torch


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


def export_component(component, out_dir: Path, opset: int, announce: Callable[[dict], None] = lambda counts: None) -> dict:
    """Export, rename nodes, refuse float64, check onnxruntime vs torch. Returns the metadata dict.

    The torch reference runs first and records the parameters it reads: the component's own count and bytes
    (a component module wraps the whole model, so `module.parameters()` would count every component), passed to
    `announce` before the (long) export."""
    import onnx
    import onnxruntime as ort
    import torch

    from .export_spec import parameter_counts, run_counting_parameters

    path = out_dir / f"{component.name}.onnx"
    args = tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in component.inputs.values())
    refs, used = run_counting_parameters(component.module, args)
    refs = refs if isinstance(refs, tuple) else (refs,)
    counts = parameter_counts(used)
    announce(counts)
    external = counts["parameters_bytes"] > EXTERNAL_DATA_BYTES
    t0 = time.perf_counter()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" etc.
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(component.module, args, str(path), input_names=list(component.inputs),
                              output_names=list(component.outputs), opset_version=opset, dynamo=True,
                              dynamic_shapes=_dynamic_shapes(component), external_data=external, verbose=False)
    except Exception as exc:
        raise ExportError(f"torch.onnx.export of {component.name} failed: {type(exc).__name__}: {exc}") from exc
    model = onnx.load(str(path), load_external_data=True)
    rename_nodes_uniquely(model)
    bad = float64_nodes(model)
    if bad:
        raise ExportError(f"{path}: {len(bad)} float64 node(s) ({', '.join(bad[:5])}); onnxruntime >= 1.24 and TensorRT "
                          "reject them: compute them in float32 or pass them as inputs")
    for f in out_dir.glob(f"{component.name}.onnx*"):
        f.unlink()
    onnx.save(model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
              location=f"{component.name}.onnx.data" if external else None)
    export_s = time.perf_counter() - t0
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = session.run(list(component.outputs), {k: np.ascontiguousarray(v) for k, v in component.inputs.items()})
    parity = {name: compare(r.float().numpy(), o) for name, r, o in zip(component.outputs, refs, outs)}
    for name, p in parity.items():
        if p["cosine"] < PARITY["cosine"] or p["rel_max_abs"] > PARITY["rel_max_abs"]:
            raise ExportError(f"{component.name}.{name}: onnxruntime differs from torch (cosine {p['cosine']:.6f}, "
                              f"max abs {p['max_abs']:.2e}); limits cosine >= {PARITY['cosine']}, relative max abs <= "
                              f"{PARITY['rel_max_abs']}")
    return {"component": component.name, "file": path.name, "external_data": external, "opset": opset,
            "inputs": tensor_shapes(model.graph.input), "outputs": tensor_shapes(model.graph.output),
            "dynamic": {k: {str(a): s for a, s in v.items()} for k, v in component.dynamic.items()},
            "ranges": {k: list(v) for k, v in component.ranges.items()},
            "example_shapes": {k: list(v.shape) for k, v in component.inputs.items()},
            **counts, "weights_bytes": stored_tensors(model)["bytes"],  # stored in the file (+ constants, - dead code)
            "nodes": len(model.graph.node), "quantize": component.quantize,
            "optional": component.optional, "notes": component.notes, "export_seconds": round(export_s, 2),
            "parity_vs_torch": parity}


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
    import torch

    from .variants import export_components, load_policy

    checkpoint, out = Path(checkpoint), Path(out)
    if not 13 <= opset <= 23:
        raise ExportError(f"--opset {opset}: use 17-20 for TensorRT 10.3 (JetPack 6); at most 23")
    with staged_dir(out) as tmp:  # built beside OUT; the previous OUT stays until the new one is complete
        progress(f"loading {checkpoint}")
        loaded = load_policy(checkpoint, base=base, dtype=torch.float32, prompt_cache=tmp / "prompts.npz", canvas=canvas)
        spec = loaded.policy.spec
        for text in instructions or []:
            loaded.policy.text(text)  # fills prompts.npz
        components = export_components(spec.variant, loaded, text_encoder=text_encoder)
        metas = {}
        for i, (name, comp) in enumerate(components.items(), 1):
            def announce(counts, i=i, name=name):
                progress(f"[{i}/{len(components)}] exporting {name} ({counts['parameters'] / 1e6:.1f} M params, "
                         f"{counts['parameters_bytes'] / 1e9:.2f} GB)")

            meta = export_component(comp, tmp, opset, announce)
            meta["variant"], meta["precision"] = spec.variant, "fp32"
            (tmp / f"{name}.json").write_text(json.dumps(meta, indent=1))
            metas[name] = meta
            worst = min(p["cosine"] for p in meta["parity_vs_torch"].values())
            progress(f"      {name}: {meta['nodes']} nodes, {meta['weights_bytes'] / 1e9:.2f} GB of weights in the file, "
                     f"onnxruntime vs torch cosine {worst:.7f}, max abs "
                     f"{max(p['max_abs'] for p in meta['parity_vs_torch'].values()):.2e}")
        if "text_encoder" in components:
            write_text_encoder_files(loaded.text_encoder, tmp)
        shutil.copy(loaded.checkpoint.stats_path, tmp / "dataset_stats.json")
        (tmp / "policy.json").write_text(json.dumps(spec.to_dict(), indent=1))
        source = {"checkpoint": str(checkpoint.resolve()), "model.pt": sha256_file(checkpoint / "model.pt"),
                  "dataset_stats.json": sha256_file(checkpoint / "dataset_stats.json"), "step": loaded.checkpoint.step}
        manifest = write_manifest(tmp, "onnx", "fp32", {"variant": spec.variant, "source": source, "versions": versions(),
                                                        "components": sorted(m for m in metas if not metas[m]["optional"]),
                                                        "optional_components": sorted(m for m in metas if metas[m]["optional"])})
        replace_dir(tmp, out)
    return {"out": str(out), "components": metas, "manifest": manifest}
