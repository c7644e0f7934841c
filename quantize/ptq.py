"""`imagewam-edge quantize`: post-training quantization of exported FP32 ONNX engines to INT8 or FP8 with the
weights STORED in 8 bits, then the accuracy gate (quantize/gate.py).

Memory-bounded at real size (the FLUX.2-4B prefill is 15.5 GB of float32):
1. the FP32 engines run on the calibration and held-out observations through onnxruntime sessions that hold their
   weights once, one component at a time when they do not fit together (quantize/bounded_backend.py); the inputs
   each component receives are kept (the prefill's K/V once per observation, not once per denoise step), and for
   the held-out observations the outputs too (the gate's reference); then the FP32 sessions are released;
2. per component, activation ranges from one session over its calibration inputs (quantize/calibrate.py), then
   the quantized graph is written one weight at a time (quantize/compact.py): no copy of the model in memory or
   in scratch files;
3. the gate runs the quantized engines against the recorded reference (the FP32 engines are not loaded again).
`--method modelopt` quantizes each component with NVIDIA Model Optimizer's ONNX PTQ instead (dq_only weights;
~10x the component's float32 size in RAM: small models only; quantize/modelopt_ptq.py).

Calibration data are real observations (a recording directory, `edge/recording.py`); a synthetic set is made only
when asked (`--synthetic N`) and the report says so. Every observation is pushed through the FP32 engines and the
inputs each component sees are captured (the denoise step at every sigma)."""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edge.atomic import replace_dir, staged_dir
from edge.engines import load_engine_policy, read_json
from edge.recording import Observation, iter_observations

from .export import write_manifest
from .onnx_utils import sha256_file
from .precision import QUANTIZED
from .qdq_check import QuantizationError, check_quantized, expected_quantized  # noqa: F401  (QuantizationError re-exported)

from .capture import Capture, capture, capture_inputs  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


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


def quantize_component_compact(src: Path, dst: Path, component: str, precision: str, feeds: list[dict],
                               progress: Callable[[str], None] = lambda s: None) -> dict:
    """Activation ranges over `feeds`, then the compact Q/DQ graph written weight by weight; checked."""
    import onnx

    from .calibrate import activation_inputs, activation_ranges
    from .compact import write_compact_qdq

    fp32 = onnx.load(str(src), load_external_data=False)
    want, _, _ = expected_quantized(fp32, component, precision)
    t0 = time.perf_counter()
    amax = activation_ranges(src, activation_inputs(fp32, want), feeds, progress)
    info = write_compact_qdq(src, dst, want, amax, precision, progress=progress)
    info.update(check_quantized(fp32, onnx.load(str(dst), load_external_data=False), component, precision))
    info["seconds"] = round(time.perf_counter() - t0, 2)
    return info


METHODS = ("streamed", "modelopt")
GATE_SEED = 1000  # held-out observation i is sampled with noise seed GATE_SEED + i (gate.compare_policies' default)


def quantize_engines(onnx_dir: str | Path, precision: str, out: str | Path, calibration: str | Path | None = None,
                     synthetic: int = 0, holdout: float = 0.25, max_observations: int = 64,
                     high_precision: str = "fp32", gate: bool = True, include: tuple[str, ...] = (),
                     validation: str | Path | None = None, method: str = "streamed",
                     progress: Callable[[str], None] = lambda s: None) -> dict:
    from .bounded_backend import bounded_policy
    from .memory import current_rss_bytes, peak_rss_bytes, release_memory

    t_start = time.monotonic()
    onnx_dir = Path(onnx_dir)
    _check_request(precision, method, high_precision)
    manifest = read_json(onnx_dir / "manifest.json", "quantize reads an FP32 engines directory written by `export`")
    if manifest.get("kind") != "onnx" or manifest.get("precision") != "fp32":
        raise QuantizationError(f"{onnx_dir} holds {manifest.get('precision')} {manifest.get('kind')} engines; "
                                "quantize starts from the FP32 ONNX export")
    fp32 = bounded_policy(onnx_dir)
    calib, held, kind = load_observations(fp32, calibration, synthetic, validation, holdout, max_observations)
    progress(f"[1/3] running the FP32 engines on {len(calib)} {kind} calibration observations and {len(held)} held out "
             f"({'one component at a time' if fp32.backend.one_at_a_time else 'all components loaded'})")
    feeds = capture(fp32, calib).feeds
    reference = capture(fp32, held, seed=GATE_SEED, outputs=True) if gate else None
    fp32.backend.close()
    del fp32
    release_memory()
    progress(f"      captured; RSS {current_rss_bytes() / 2**30:.2f} GiB (peak {peak_rss_bytes() / 2**30:.2f}), "
             f"{time.monotonic() - t_start:.0f} s")
    info = {"kind": kind, "source": str(calibration or ""), "observations": len(calib), "held_out": len(held),
            "validation": str(validation or "")}
    report = quantize_from_feeds(onnx_dir, precision, out, feeds, held, info, high_precision, gate, include, progress,
                                 method=method, reference=reference)
    final = Path(report["out"])
    report["resources"] = {"wall_seconds": round(time.monotonic() - t_start, 1), "peak_rss_bytes": peak_rss_bytes(),
                           "out_bytes": sum(f.stat().st_size for f in final.iterdir() if f.is_file()),
                           "onnx_bytes": sum(f.stat().st_size for f in final.glob("*.onnx*"))}
    res = report["resources"]
    progress(f"quantize done in {res['wall_seconds']:.0f} s, peak RSS {res['peak_rss_bytes'] / 2**30:.2f} GiB, "
             f"{final.name}: {res['out_bytes'] / 1e9:.2f} GB")
    return report


def _check_request(precision: str, method: str, high_precision: str) -> None:
    if precision not in QUANTIZED:
        raise QuantizationError(f"--precision {precision}: one of {QUANTIZED}")
    if method not in METHODS:
        raise QuantizationError(f"--method {method}: one of {METHODS}")
    if method == "streamed" and high_precision != "fp32":
        raise QuantizationError(f"--high-precision {high_precision} needs --method modelopt (ModelOpt converts the "
                                "layers it leaves unquantized; the streamed writer keeps them in float32)")


def quantize_from_feeds(onnx_dir: str | Path, precision: str, out: str | Path, feeds: dict[str, list[dict]],
                        held: list[Observation], calibration_info: dict, high_precision: str = "fp32",
                        gate: bool = True, include: tuple[str, ...] = (),
                        progress: Callable[[str], None] = lambda s: None, method: str = "streamed",
                        reference: Capture | None = None) -> dict:
    """Quantize every component from captured calibration feeds, gate on `held` (against `reference`, the FP32
    engines' capture of `held` with outputs and seeds from GATE_SEED; recorded here when not given), write OUT (or
    OUT.rejected)."""
    from .gate import compare_to_reference

    _check_request(precision, method, high_precision)
    onnx_dir, out = Path(onnx_dir), Path(out)
    manifest = read_json(onnx_dir / "manifest.json", "quantize reads an FP32 engines directory written by `export`")
    if gate and reference is None:
        reference = _reference(onnx_dir, held)
    with staged_dir(out) as tmp:  # built beside OUT; the previous OUT stays until the new one is complete
        for name in ("policy.json", "dataset_stats.json", "prompts.npz", "tokenizer.json", "text_encoder_prompt.json"):
            if (onnx_dir / name).exists():
                shutil.copy(onnx_dir / name, tmp / name)
        for comp in manifest.get("optional_components", []):  # e.g. the text encoder: off the control path, kept as is
            for f in onnx_dir.glob(f"{comp}.*"):
                shutil.copy(f, tmp / f.name)
        quant = {}
        log = out.with_name(out.name + ".modelopt.log") if method == "modelopt" else None
        if log is not None:  # ModelOpt's progress bars and log: to this file, one summary line per component here
            log.write_text("")
            progress(f"      ModelOpt's own output goes to {log}")
        for i, comp in enumerate(manifest["components"], 1):
            meta = read_json(onnx_dir / f"{comp}.json", "component metadata from export")
            src = onnx_dir / f"{comp}.onnx"
            if not meta.get("quantize", True) and comp not in include:
                for f in onnx_dir.glob(src.name + "*"):
                    shutil.copy(f, tmp / f.name)
                quant[comp] = {"quantized_layers": 0, "note": "kept FP32 (not worth quantizing)"}
            else:
                progress(f"[2/3] quantizing {comp} to {precision} ({len(feeds[comp])} calibration feeds, {method})")
                quant[comp] = _quantize_one(method, src, tmp / src.name, comp, precision, feeds[comp], high_precision,
                                            progress, log)
                progress(f"      {comp}: {quant[comp]['quantized_layers']} layers quantized (weights "
                         f"{quant[comp]['weights_stored']}), {quant[comp]['high_precision_layers']} kept high "
                         f"precision, Q/DQ {quant[comp]['qdq']}, {quant[comp]['seconds']:.0f} s")
            meta.update({"precision": precision if quant[comp].get("quantized_layers") else "fp32",
                         "quantization": quant[comp], "source_sha256": sha256_file(src),
                         "onnx_bytes": sum(f.stat().st_size for f in tmp.glob(src.name + "*"))})
            (tmp / f"{comp}.json").write_text(json.dumps(meta, indent=1))
        report = {"precision": precision, "method": method, "calibration": calibration_info, "components": quant}
        if gate:
            progress("[3/3] accuracy gate on held-out observations")
            test = load_engine_policy(tmp)
            try:
                report["accuracy"] = compare_to_reference(reference, test, held, precision, GATE_SEED)
            finally:
                test.backend.close()
        passed = report.get("accuracy", {}).get("passed", True)
        report["gate"] = "skipped" if not gate else ("passed" if passed else "failed")
        (tmp / "quantization.json").write_text(json.dumps(report, indent=1))
        write_manifest(tmp, "onnx", precision, {"variant": manifest.get("variant"), "source": manifest.get("source"),
                                                "versions": manifest.get("versions"), "components": manifest["components"],
                                                "optional_components": manifest.get("optional_components", []),
                                                "calibration": calibration_info, "high_precision": high_precision,
                                                "method": method, "gate": report["gate"]})
        final = out if passed else out.with_name(out.name + ".rejected")  # a failed gate never takes the real name
        replace_dir(tmp, final)
    report["out"] = str(final)
    return report


def _quantize_one(method, src, dst, comp, precision, feeds, high_precision, progress, log=None) -> dict:
    if method == "modelopt":
        from .modelopt_ptq import quantize_component

        return quantize_component(src, dst, comp, precision, feeds, high_precision, log=log)
    return quantize_component_compact(src, dst, comp, precision, feeds, progress)


def _reference(onnx_dir: Path, held: list[Observation]) -> Capture:
    """The FP32 engines' capture of the held-out observations (outputs included), sessions released after."""
    from .bounded_backend import bounded_policy
    from .memory import release_memory

    fp32 = bounded_policy(onnx_dir)
    try:
        return capture(fp32, held, seed=GATE_SEED, outputs=True)
    finally:
        fp32.backend.close()
        release_memory()
