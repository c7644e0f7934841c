"""`imagewam-edge quantize`: post-training quantization of exported ONNX engines with NVIDIA Model Optimizer
(ONNX PTQ; calibration runs through onnxruntime on the CPU), then the accuracy gate (quantize/gate.py).

Calibration data are real observations (a recording directory, `edge/recording.py`); a synthetic set is made only
when asked (`--synthetic N`) and the report says so. Every observation is pushed through the FP32 engines and the
inputs each component sees are captured (the denoise step at every sigma)."""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edge.atomic import replace_dir, staged_dir
from edge.engines import load_engine_policy, read_json
from edge.errors import ImageWAMEdgeError
from edge.recording import Observation, iter_observations

from .export import write_manifest
from .onnx_utils import qdq_counts, sha256_file
from .precision import QUANTIZED, QUANTIZED_OPS, keep_high_precision, node_scopes

log = logging.getLogger(__name__)


class QuantizationError(ImageWAMEdgeError):
    """Quantization failed or did not quantize what the precision policy asks for."""


class ListReader:
    """onnxruntime CalibrationDataReader over a list of feeds (+ the get_first/rewind ModelOpt calls)."""

    def __init__(self, feeds: list[dict]):
        self.feeds, self._it = feeds, iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def get_first(self):
        return self.feeds[0]

    def rewind(self):
        self._it = iter(self.feeds)


def capture_inputs(policy, observations: list[Observation], seed: int = 0) -> tuple[dict[str, list[dict]], list[dict]]:
    """Run `policy` on every observation; returns (component -> list of input feeds, per-observation results)."""
    captured: dict[str, list[dict]] = {}
    run = policy.backend.run

    def recording(component, inputs):
        captured.setdefault(component, []).append({k: np.array(v, copy=True) for k, v in inputs.items()})
        return {k: np.array(v, copy=True) for k, v in run(component, inputs).items()}

    policy.backend.run = recording
    results = []
    try:
        for i, obs in enumerate(observations):
            results.append(policy.infer(obs.as_obs(), seed=seed + i))
    finally:
        policy.backend.run = run
    return captured, results


def synthetic_observations(n: int, policy, seed: int = 0) -> list[Observation]:
    """Only with --synthetic: coloured blocks on a table per camera slot, states within the training range."""
    rng = np.random.default_rng(seed)
    obs = []
    lo, hi = -1.0, 1.0
    for i in range(n):
        images = []
        for slot in policy.canvas.slots:
            img = np.zeros((slot.height, slot.width, 3), np.uint8)
            img[:] = rng.integers(60, 200, 3)
            for _ in range(3):
                y, x = rng.integers(0, slot.height - 20), rng.integers(0, slot.width - 20)
                img[y : y + 20, x : x + 20] = rng.integers(0, 255, 3)
            images.append(img)
        state = policy.state_norm.backward(rng.uniform(lo, hi, policy.spec.state_dim))
        obs.append(Observation(images, state, "pick up the red block", episode=i))
    return obs


def modelopt_small_convs(model, precision: str) -> set[str]:
    """Convolutions ModelOpt leaves unquantized by its own rule (I/O channels < 16, small FP8 convs)."""
    import onnx_graphsurgeon as gs
    from modelopt.onnx.quantization.graph_utils import find_nodes_from_convs_to_exclude

    if not any(n.op_type == "Conv" for n in model.graph.node):
        return set()
    return set(find_nodes_from_convs_to_exclude(gs.import_onnx(model), quantize_mode=precision))


def expected_quantized(model, component: str, precision: str = "int8") -> tuple[list[str], list[str], list[str]]:
    """(nodes whose weights must be quantized, nodes kept in high precision by our policy, nodes ModelOpt skips)."""
    inits = {i.name for i in model.graph.initializer}
    ops = QUANTIZED_OPS.get(component, ("MatMul", "Gemm"))
    small = modelopt_small_convs(model, precision)
    want, keep, skipped = [], [], []
    for node in model.graph.node:
        if node.op_type not in ops or len(node.input) < 2 or node.input[1] not in inits:
            continue  # activation x activation products (attention) are never quantized
        if keep_high_precision(node):
            keep.append(node.name)
        elif node.name in small:
            skipped.append(node.name)
        else:
            want.append(node.name)
    return want, keep, skipped


def weight_is_quantized(model, node_name: str) -> bool:
    producer = {o: n for n in model.graph.node for o in n.output}
    node = next((n for n in model.graph.node if n.name == node_name), None)
    if node is None or len(node.input) < 2:
        return False
    src = producer.get(node.input[1])
    return src is not None and src.op_type == "DequantizeLinear"


def check_quantized(fp32_model, q_model, component: str, precision: str) -> dict:
    want, keep, skipped = expected_quantized(fp32_model, component, precision)
    missing = [n for n in want if not weight_is_quantized(q_model, n)]
    leaked = [n for n in keep if weight_is_quantized(q_model, n)]
    counts = qdq_counts(q_model)
    kind = "int8" if precision == "int8" else "fp8"
    scopes = {n.name: node_scopes(n)[-2:] for n in fp32_model.graph.node}
    if missing:
        raise QuantizationError(f"{component}: {len(missing)} of {len(want)} weight layers were not quantized: "
                                + ", ".join(f"{n} {scopes.get(n)}" for n in missing[:5]))
    if leaked:
        raise QuantizationError(f"{component}: layers the precision policy keeps in high precision were quantized: "
                                + ", ".join(f"{n} {scopes.get(n)}" for n in leaked[:5]))
    if counts[kind] < 2 * len(want) or counts["other"]:
        raise QuantizationError(f"{component}: expected >= {2 * len(want)} {kind} Q/DQ nodes, found {counts}")
    return {"quantized_layers": len(want), "high_precision_layers": len(keep), "skipped_small_layers": len(skipped),
            "qdq": counts}


def quantize_component(src: Path, dst: Path, component: str, precision: str, feeds: list[dict],
                       high_precision: str = "fp32") -> dict:
    import onnx
    from modelopt.onnx.quantization import quantize

    fp32 = onnx.load(str(src), load_external_data=False)
    _, keep, _ = expected_quantized(fp32, component, precision)
    external = any(i.data_location == onnx.TensorProto.EXTERNAL for i in fp32.graph.initializer)
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f"{component}-", dir=dst.parent))
    try:  # ModelOpt rewrites its input file in place (seen: the FP32 denoise_step.onnx changed): give it a copy
        for f in src.parent.glob(f"{src.name}*"):
            shutil.copy(f, work / f.name)
        with contextlib.redirect_stdout(sys.stderr):  # onnxruntime's calibrator prints progress on stdout
            quantize(str(work / src.name), quantize_mode=precision, calibration_data_reader=ListReader(feeds), calibration_eps=["cpu"],
                     output_path=str(dst), high_precision_dtype=high_precision, disable_mha_qdq=True,
                     op_types_to_quantize=list(QUANTIZED_OPS.get(component, ("MatMul", "Gemm"))),
                     nodes_to_exclude=keep, use_external_data_format=external, log_level="ERROR")
    except Exception as exc:
        raise QuantizationError(f"ModelOpt {precision} PTQ of {component} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    q = onnx.load(str(dst), load_external_data=False)
    info = check_quantized(fp32, q, component, precision)
    info["seconds"] = round(time.perf_counter() - t0, 2)
    return info


def load_observations(fp32, calibration=None, synthetic: int = 0, validation=None, holdout: float = 0.25,
                      max_observations: int = 64):
    """-> (calibration observations, held-out observations, kind)."""
    if calibration:
        observations, kind = list(iter_observations(calibration)), "recorded"
    elif synthetic:
        observations, kind = synthetic_observations(int(synthetic), fp32), "synthetic"
    else:
        raise QuantizationError("no calibration data: pass --calibration DIR (observations recorded with "
                                "`imagewam-edge run --record DIR`), or --synthetic N to calibrate on generated images "
                                "(labelled synthetic in the report)")
    if len(observations) < (1 if validation else 4):
        raise QuantizationError(f"{len(observations)} observation(s) in {calibration}: need at least 4 "
                                "(3 to calibrate, 1 held out); record more steps")
    if len(observations) > max_observations:  # spread the subset over the whole recording
        idx = np.linspace(0, len(observations) - 1, max_observations).round().astype(int)
        observations = [observations[i] for i in idx]
    if validation:  # held-out observations from another recording: all of this one calibrates
        return observations, list(iter_observations(validation))[:max_observations], kind
    n_hold = max(1, int(round(len(observations) * holdout)))
    held = observations[:: max(1, len(observations) // n_hold)][:n_hold]
    held_ids = {id(o) for o in held}
    return [o for o in observations if id(o) not in held_ids], held, kind


def quantize_engines(onnx_dir: str | Path, precision: str, out: str | Path, calibration: str | Path | None = None,
                     synthetic: int = 0, holdout: float = 0.25, max_observations: int = 64,
                     high_precision: str = "fp32", gate: bool = True, include: tuple[str, ...] = (),
                     validation: str | Path | None = None, progress: Callable[[str], None] = lambda s: None) -> dict:
    onnx_dir = Path(onnx_dir)
    if precision not in QUANTIZED:
        raise QuantizationError(f"--precision {precision}: one of {QUANTIZED}")
    manifest = read_json(onnx_dir / "manifest.json", "quantize reads an FP32 engines directory written by `export`")
    if manifest.get("kind") != "onnx" or manifest.get("precision") != "fp32":
        raise QuantizationError(f"{onnx_dir} holds {manifest.get('precision')} {manifest.get('kind')} engines; "
                                "quantize starts from the FP32 ONNX export")
    fp32 = load_engine_policy(onnx_dir)
    calib, held, kind = load_observations(fp32, calibration, synthetic, validation, holdout, max_observations)
    progress(f"calibrating on {len(calib)} {kind} observations, {len(held)} held out")
    feeds, _ = capture_inputs(fp32, calib)
    info = {"kind": kind, "source": str(calibration or ""), "observations": len(calib), "held_out": len(held),
            "validation": str(validation or "")}
    return quantize_from_feeds(onnx_dir, precision, out, feeds, held, info, high_precision, gate, include, progress)


def quantize_from_feeds(onnx_dir: str | Path, precision: str, out: str | Path, feeds: dict[str, list[dict]],
                        held: list[Observation], calibration_info: dict, high_precision: str = "fp32",
                        gate: bool = True, include: tuple[str, ...] = (),
                        progress: Callable[[str], None] = lambda s: None) -> dict:
    """Quantize every component from captured calibration feeds, gate on `held`, write OUT (or OUT.rejected)."""
    from .gate import accuracy_report

    onnx_dir, out = Path(onnx_dir), Path(out)
    manifest = read_json(onnx_dir / "manifest.json", "quantize reads an FP32 engines directory written by `export`")
    with staged_dir(out) as tmp:  # built beside OUT; the previous OUT stays until the new one is complete
        for name in ("policy.json", "dataset_stats.json", "prompts.npz", "tokenizer.json", "text_encoder_prompt.json"):
            if (onnx_dir / name).exists():
                shutil.copy(onnx_dir / name, tmp / name)
        for comp in manifest.get("optional_components", []):  # e.g. the text encoder: off the control path, kept as is
            for f in onnx_dir.glob(f"{comp}.*"):
                shutil.copy(f, tmp / f.name)
        quant = {}
        for comp in manifest["components"]:
            meta = read_json(onnx_dir / f"{comp}.json", "component metadata from export")
            src = onnx_dir / f"{comp}.onnx"
            if not meta.get("quantize", True) and comp not in include:
                shutil.copy(src, tmp / src.name)
                quant[comp] = {"quantized_layers": 0, "note": "kept FP32 (not worth quantizing)"}
            else:
                progress(f"quantizing {comp} to {precision} ({len(feeds[comp])} calibration feeds)")
                quant[comp] = quantize_component(src, tmp / src.name, comp, precision, feeds[comp], high_precision)
                progress(f"      {comp}: {quant[comp]['quantized_layers']} layers quantized, "
                         f"{quant[comp]['high_precision_layers']} kept high precision, Q/DQ {quant[comp]['qdq']}")
            meta.update({"precision": precision if quant[comp].get("quantized_layers") else "fp32",
                         "quantization": quant[comp], "source_sha256": sha256_file(src)})
            (tmp / f"{comp}.json").write_text(json.dumps(meta, indent=1))
        report = {"precision": precision, "calibration": calibration_info, "components": quant}
        if gate:
            progress("accuracy gate on held-out observations")
            report["accuracy"] = accuracy_report(onnx_dir, tmp, held, precision)
        passed = report.get("accuracy", {}).get("passed", True)
        report["gate"] = "skipped" if not gate else ("passed" if passed else "failed")
        (tmp / "quantization.json").write_text(json.dumps(report, indent=1))
        write_manifest(tmp, "onnx", precision, {"variant": manifest.get("variant"), "source": manifest.get("source"),
                                                "versions": manifest.get("versions"), "components": manifest["components"],
                                                "optional_components": manifest.get("optional_components", []),
                                                "calibration": calibration_info, "high_precision": high_precision,
                                                "gate": report["gate"]})
        final = out if passed else out.with_name(out.name + ".rejected")  # a failed gate never takes the real name
        replace_dir(tmp, final)
    report["out"] = str(final)
    return report
