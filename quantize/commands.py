"""Offline subcommands: `demo-checkpoint`, `prompts`. Heavy imports inside the handlers."""
from __future__ import annotations

from edge.cli_util import add_engines, add_json, command, emit_json, group


def progress_printer(quiet: bool = False):
    """Progress of a long job: one line per step on stderr (stdout carries only the result); nothing with `quiet`
    (--json: the one JSON object, whose `resources` hold the wall time and peak RSS)."""
    import sys

    if quiet:
        return lambda s: None
    return lambda s: print(s, file=sys.stderr, flush=True)


def register(sub) -> None:
    register_export(sub)
    register_quantize(sub)
    register_device(sub)
    p = command(sub, "demo-checkpoint", "Write a random-weight ImageWAM checkpoint in the official release layout "
                "(with an autoencoder and text encoder under base/): flux2-tiny / ovis-u1-tiny to try every job in "
                "seconds; flux2-4b / flux2-9b / ovis-u1 at the REAL size (9 / 20 / 8 GB of bf16, written tensor by tensor) "
                "to rehearse the real-size pipeline, or real-width slices of them with --double-blocks/--single-blocks.",
                "imagewam-edge demo-checkpoint --variant flux2-4b --double-blocks 1 --single-blocks 1 --out slice", _demo)
    from edge.model_variants import size_names

    p.add_argument("--variant", default="flux2-tiny", choices=size_names(), help="model family and size")
    p.add_argument("--embodiment", default="libero", choices=["libero", "robotwin", "sim"],
                   help="camera canvas, normalisation and post-processing preset (default libero)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="weight seed")
    p.add_argument("--double-blocks", type=int, metavar="N",
                   help="real-size demos: keep N double-stream blocks (default: the real 5 / 8 / 6); real widths")
    p.add_argument("--single-blocks", type=int, metavar="N",
                   help="real-size demos: keep N single-stream blocks (default: the real 20 / 24 / 12); real widths")
    p.add_argument("--full-text-encoder", action="store_true",
                   help="real-size demos: write the Qwen3 text encoder / Ovis LLM in its real configuration (36 layers: "
                        "8 / 16 GB; Qwen3-1.7B: 28 layers, 4 GB) instead of the 4-layer stand-in at the real width")

    _, ps = group(sub, "prompts", "Manage the prompt-embedding cache: run the text encoder once per instruction so "
                  "the control loop never does.", "imagewam-edge prompts add --checkpoint demo --prompt-cache "
                  "prompts.npz --instruction 'pick up the red block'", dest="prompts_command", metavar="ACTION")
    a = command(ps, "add", "Encode instructions and store them in the cache.",
                "imagewam-edge prompts add --checkpoint demo --prompt-cache prompts.npz --instruction 'open the drawer'", _prompts_add)
    src = a.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint directory (workstation: runs the text encoder with torch)")
    src.add_argument("--engines", help="engines directory exported with --text-encoder (device: onnxruntime, no "
                     "torch)")
    a.add_argument("--base", help="FLUX.2 klein base release; default CHECKPOINT/base")
    a.add_argument("--prompt-cache", help="cache file (.npz), created if missing (default with --engines: "
                   "ENGINES/prompts.npz)")
    a.add_argument("--instruction", action="append", default=[], help="repeatable")
    a.add_argument("--file", help="a text file with one instruction per line")
    add_json(a)
    ls = command(ps, "list", "List the cached instructions.", "imagewam-edge prompts list --prompt-cache prompts.npz",
                 _prompts_list, json=True)
    ls.add_argument("--prompt-cache", required=True)


def register_export(sub) -> None:
    p = command(sub, "export", "Export a checkpoint to ONNX engines (vision_encoder, prefill, denoise_step), each "
                "checked against PyTorch with onnxruntime; writes policy.json, metadata and a manifest. Memory-bounded: "
                "the checkpoint stays memory-mapped in its stored dtype and float32 weights are written one tensor at "
                "a time (peak: about the larger of the stored checkpoint and one engine's float32 weights); ends with "
                "its wall time and peak RSS.",
                "imagewam-edge export --checkpoint demo --out engines/fp32 --instruction 'pick up the red block'", _export)
    p.add_argument("--checkpoint", required=True, help="ImageWAM release directory")
    p.add_argument("--out", required=True, help="engines directory to create (replaced atomically)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18: TensorRT 10.3 on JetPack 6 parses <= 20)")
    p.add_argument("--canvas", choices=["libero", "robotwin", "single", "sim"],
                   help="camera canvas preset (default: the checkpoint's embodiment's)")
    p.add_argument("--base", help="FLUX.2 klein base release; default CHECKPOINT/base")
    p.add_argument("--instruction", action="append", default=[],
                   help="instruction to put in the engines' prompt cache (repeatable); the runtime has no text encoder")
    p.add_argument("--text-encoder", action="store_true",
                   help="also export the text encoder (off the control path) so `prompts add --engines` works on the "
                        "device without torch")
    add_json(p)


def register_quantize(sub) -> None:
    p = command(sub, "quantize", "Quantize exported FP32 engines to INT8 or FP8 (calibrated on recorded observations "
                "through onnxruntime; weights STORED in 8 bits, Q/DQ as NVIDIA Model Optimizer writes it), then gate their "
                "accuracy against FP32 on held-out observations. Memory-bounded: the FP32 engines run one component at a "
                "time when they do not fit together, and the quantized graph is written one weight at a time (FLUX.2-4B: "
                "see the README's table). Ends with its wall time, peak RSS and output size. Exit code 3 when the gate "
                "fails (the result goes to OUT.rejected). INT4 / NVFP4 weights: not offered here (see the README).",
                "imagewam-edge quantize --engines engines/fp32 --precision int8 --calibration recordings/day1 --out "
                "engines/int8", _quantize)
    add_engines(p, "FP32 engines directory written by `export` (ONNX)", required=True)
    p.add_argument("--precision", required=True, choices=["int8", "fp8"],
                   help="int8 for Jetson Orin (sm 8.7 has no FP8); fp8 for Thor / Ada / Hopper")
    p.add_argument("--calibration", help="recording directory (`run --record DIR`; format in the README)")
    p.add_argument("--synthetic", type=int, default=0, metavar="N",
                   help="calibrate on N generated observations instead (labelled synthetic in the report)")
    p.add_argument("--out", required=True, help="output engines directory")
    p.add_argument("--holdout", type=float, default=0.25, help="fraction of observations held out for the gate")
    p.add_argument("--validation", help="gate on this recording instead of a held-out part of --calibration")
    p.add_argument("--max-observations", type=int, default=64, help="subsample long recordings to this many")
    p.add_argument("--method", choices=["streamed", "modelopt"], default="streamed",
                   help="streamed (default): activation ranges by max calibration, weights written one at a time, "
                        "bounded memory; modelopt: NVIDIA Model Optimizer's ONNX PTQ per component (dq_only weights; "
                        "~10x the component's float32 size in RAM: small models only)")
    p.add_argument("--high-precision", choices=["fp32", "fp16"], default="fp32",
                   help="dtype of the layers left unquantized: fp32 (CPU gates); fp16 only with --method modelopt")
    p.add_argument("--include", action="append", default=[], choices=["vision_encoder"],
                   help="also quantize a component kept in high precision by default: vision_encoder (FLUX.2: the "
                        "autoencoder; Ovis-U1: its VLM, the autoencoder inside stays FP32; gate it: at real size the "
                        "W8A8 VLM failed)")
    p.add_argument("--no-gate", action="store_true", help="skip the accuracy gate (not recommended)")
    p.add_argument("--closed-loop-episodes", type=int, default=0, metavar="N",
                   help="also run N seeded toy-task episodes (edge/task) with the FP32 and the quantized engines "
                        "through the control loop; exit 3 when the quantized success drops > 10 points")
    p.add_argument("--closed-loop-seed", type=int, default=0, help="first episode seed of --closed-loop-episodes")
    add_json(p)


def _quantize(args) -> int:
    import sys

    from .gate import format_report
    from .ptq import quantize_engines

    say = progress_printer(quiet=args.json)
    report = quantize_engines(args.engines, args.precision, args.out, calibration=args.calibration,
                              synthetic=args.synthetic, holdout=args.holdout, max_observations=args.max_observations,
                              high_precision=args.high_precision, gate=not args.no_gate, include=tuple(args.include),
                              validation=args.validation, method=args.method, progress=say)
    if args.closed_loop_episodes > 0 and report["gate"] != "failed":  # the toy task's closed-loop check (edge/task)
        from .closed_loop import closed_loop_compare, format_closed_loop

        report["closed_loop"] = closed_loop_compare(args.engines, {args.precision: report["out"]}, args.closed_loop_episodes,
                                                    args.closed_loop_seed, progress=say)
        print(format_closed_loop(report["closed_loop"]), file=sys.stderr if args.json else sys.stdout, flush=True)
    if args.json:
        emit_json(report)
    elif "accuracy" in report:
        print(format_report(report["accuracy"]))
    res = report["resources"]
    print(f"{'wrote' if report['gate'] != 'failed' else 'REJECTED, kept for inspection in'} {report['out']}: "
          f"{res['out_bytes'] / 1e9:.2f} GB ({args.precision} weights stored in 8 bits), {res['wall_seconds']:.0f} s, "
          f"peak RSS {res['peak_rss_bytes'] / 2**30:.2f} GiB", file=sys.stderr if args.json else sys.stdout)
    if report.get("closed_loop") and not report["closed_loop"]["passed"]:
        return 3
    return 3 if report["gate"] == "failed" else 0


def register_device(sub) -> None:
    p = command(sub, "build", "Build TensorRT engines ON the device from an ONNX engines directory: strongly typed "
                "networks (precision from the Q/DQ graph), profiles from the export metadata, a timing cache, and a "
                "manifest the runtime checks. Refuses FP8 on Jetson Orin (sm 8.7).",
                "imagewam-edge build --engines engines/int8 --out engines/int8-trt", _build)
    add_engines(p, "ONNX engines directory from export or quantize", required=True)
    p.add_argument("--out", required=True, help="TensorRT engines directory to create")
    p.add_argument("--workspace-gb", type=float, default=4.0, help="builder workspace (default 4 GiB)")
    p.add_argument("--timing-cache", help="timing cache file (default OUT/../timing.cache; reused across builds)")
    p.add_argument("--fp16", action="store_true",
                   help="REFUSED now: builds are strongly typed (TensorRT 11 removes BuilderFlag.FP16 and weak typing), "
                   "so precision comes from the ONNX types, which build sets: --high-precision fp16 or the bf16 "
                   "default")
    p.add_argument("--high-precision", choices=["bf16", "fp16", "fp32"], default=None,
                   help="type of the layers left unquantized on the device: bf16 (default; FP32 islands for norms, "
                   "softmax and sinusoid angles; engine I/O stays float32), fp16 (only where the calibration ranges "
                   "stay under FP16's range: refused naming the layer otherwise), or fp32 (the graphs as they are). "
                   "Example: imagewam-edge build --engines engines/int8 --out engines/int8-trt --high-precision bf16")
    add_json(p)

    p = command(sub, "verify", "Compare engines with a reference on the same observations and noise (per component "
                "and whole control step; normalised and post-processed actions, worst joint error in robot units): "
                "TensorRT engines against onnxruntime on their ONNX (default), or TensorRT / ONNX engines against the "
                "checkpoint on the torch backend (--reference torch); exit code 3 when they disagree beyond the "
                "precision's limits.",
                "imagewam-edge verify --engines engines/int8-trt --observations recordings/day1    |    "
                "imagewam-edge verify --engines engines/int8-trt --reference torch --checkpoint release/ --device cuda",
                _verify)
    p.add_argument("--engines", required=True, help="the engines directory to verify: TensorRT engines from `build` "
                   "(with --reference torch also an ONNX engines directory from `export` / `quantize`, run on "
                   "onnxruntime)")
    p.add_argument("--observations", help="recording directory (default: generated observations)")
    add_engines(p, "the reference: the ONNX engines directory the engines were built from, run on onnxruntime "
                "(default: from the manifest)", flag="--reference-engines", dest="reference_engines")
    p.add_argument("--reference", choices=["onnxruntime", "torch"], default="onnxruntime",
                   help="what the engines are compared with: onnxruntime on their ONNX (default), or torch: the "
                   "checkpoint on the torch backend. Example: imagewam-edge verify --engines engines/int8-trt "
                   "--reference torch --checkpoint release/")
    p.add_argument("--checkpoint", help="--reference torch: the release directory the engines were exported from. "
                   "Example: imagewam-edge verify --engines engines/fp32 --reference torch --checkpoint release/")
    p.add_argument("--device", default="cpu", metavar="cpu|cuda|cuda:N",
                   help="--reference torch: where the torch reference runs (default cpu). Example: imagewam-edge "
                   "verify --engines engines/int8-trt --reference torch --checkpoint release/ --device cuda")
    p.add_argument("--max-observations", type=int, default=16, metavar="N",
                   help="compare on at most N observations (default 16). Example: imagewam-edge verify --engines "
                   "engines/int8-trt --max-observations 4")
    add_json(p)


def _build(args) -> int:
    from .build import build_engines

    manifest = build_engines(args.engines, args.out, workspace_gb=args.workspace_gb, timing_cache=args.timing_cache,
                             fp16=args.fp16, progress=progress_printer(quiet=args.json),
                             high_precision=args.high_precision)
    if args.json:
        emit_json(manifest)
    else:
        print(f"wrote {args.out}: TensorRT {manifest['tensorrt']}, sm {'.'.join(map(str, manifest['compute_capability']))}, "
              f"{manifest['precision']} (unquantized layers {manifest.get('high_precision', 'fp32')})")
    return 0


def _verify(args) -> int:
    from edge.errors import ConfigError

    from .gate import format_report
    from .verify import verify_engines

    if args.max_observations < 1:
        raise ConfigError(f"--max-observations must be >= 1, got {args.max_observations}")
    report = verify_engines(args.engines, args.observations, args.reference_engines, max_observations=args.max_observations,
                            reference=args.reference, checkpoint=args.checkpoint, device=args.device)
    if args.json:
        emit_json(report)
    else:
        print(format_report(report).replace(f"({report['precision']} vs FP32", f"({report['precision']} limits: "
                                            f"{report['engines_backend']} vs {report['reference']}")
              .replace("(FP32) ->", "(reference) ->"))
    return 0 if report["passed"] else 3


def _export(args) -> int:
    from .export import export_checkpoint

    say = progress_printer(quiet=args.json)
    result = export_checkpoint(args.checkpoint, args.out, opset=args.opset, canvas=args.canvas, base=args.base,
                               instructions=args.instruction, text_encoder=args.text_encoder, progress=say)
    if args.json:
        emit_json(result)
    else:
        res = result["resources"]
        print(f"wrote {result['out']}: {', '.join(result['components'])} (fp32 ONNX, opset {args.opset}); "
              f"{res['onnx_bytes'] / 1e9:.2f} GB, {res['wall_seconds']:.0f} s, peak RSS {res['peak_rss_bytes'] / 2**30:.2f} GiB")
    return 0


def _demo(args) -> int:
    from edge.model_variants import find_size

    from .variants import write_demo

    extra = {"double_blocks": args.double_blocks, "single_blocks": args.single_blocks,
             "full_text_encoder": args.full_text_encoder}
    if find_size(args.variant)[1].real_size:
        extra["progress"] = progress_printer()
    out = write_demo(args.variant, args.out, embodiment=args.embodiment, seed=args.seed, **extra)
    print(f"wrote {args.variant} demo checkpoint to {out} (model.pt, dataset_stats.json, train_config.yaml, base/)")
    from edge.transforms import get_canvas, get_embodiment

    slots = get_canvas(get_embodiment(args.embodiment).canvas).slots
    images = " ".join(f"--image {out / 'samples' / (s.name + '.png')}" for s in slots)
    print(f"try: imagewam-edge infer --checkpoint {out} {images} --instruction 'pick up the red block' "
          f"--state {','.join(['0'] * 8)}")
    return 0


def _prompt_encoder(args):
    """The text encoder that fills the cache: the torch one from a checkpoint, or the ONNX engine (no torch)."""
    from pathlib import Path

    if args.engines:
        from edge.text_engine import OnnxTextEncoder

        return OnnxTextEncoder(args.engines)
    from edge.model_variants import get_variant

    from .train_config import load_train_config
    from .variants import detect_variant

    train_config = load_train_config(args.checkpoint)
    if get_variant(detect_variant(args.checkpoint)).text_kind == "token_ids":  # Ovis-U1: the VLM's prompt token ids
        from .model.ovis_u1.backend import OvisPromptTokenizer, resolve_base as ovis_base

        return OvisPromptTokenizer(ovis_base(Path(args.checkpoint), train_config, args.base))
    from .model.text_encoder import DEFAULT_LAYERS, Qwen3TextEncoder
    from .torch_backend import resolve_base

    base = resolve_base(Path(args.checkpoint), train_config, args.base, need="text_encoder")  # no vae/ needed
    edge_cfg, model_cfg = train_config.get("edge", {}), train_config.get("model", {})
    return Qwen3TextEncoder(base / "text_encoder", base / "tokenizer", layers=edge_cfg.get("text_layers", DEFAULT_LAYERS),
                            max_length=int(model_cfg.get("qwen_context_len", 512)))


def _prompts_add(args) -> int:
    from pathlib import Path

    from edge.errors import ConfigError
    from edge.prompt_cache import PromptCache

    instructions = list(args.instruction)
    if args.file:
        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--file {args.file} cannot be read ({type(exc).__name__}: {exc}); give a UTF-8 text "
                              "file with one instruction per line") from None
        instructions += [line.strip() for line in text.splitlines() if line.strip()]
    if not instructions:
        raise ConfigError("no instruction given: use --instruction TEXT (repeatable) or --file FILE")
    if not args.prompt_cache and not args.engines:
        raise ConfigError("--prompt-cache FILE is required with --checkpoint")
    encoder = _prompt_encoder(args)
    cache = PromptCache(args.prompt_cache or Path(args.engines) / "prompts.npz")
    added = []
    for text in instructions:
        if cache.get(text, encoder.identity) is None:
            cache.put(text, encoder.identity, encoder(text))
            added.append(text)
    cache.save()
    if args.json:
        emit_json({"cache": str(cache.path), "encoder": encoder.identity, "added": added, "entries": len(cache)})
    else:
        print(f"{cache.path}: added {len(added)}, {len(cache)} entries (text encoder {encoder.identity})")
    return 0


def _prompts_list(args) -> int:
    from pathlib import Path

    from edge.errors import ConfigError
    from edge.prompt_cache import PromptCache

    if not Path(args.prompt_cache).is_file():
        raise ConfigError(f"--prompt-cache {args.prompt_cache} not found; create it with `imagewam-edge prompts add "
                          f"--prompt-cache {args.prompt_cache} --instruction TEXT`")
    cache = PromptCache(args.prompt_cache)
    if args.json:
        emit_json({"entries": cache.entries()})
    else:
        for e in cache.entries():
            print(f"{e['key']}  {e.get('tokens', '?'):>4} x {e.get('width', '?')}  {e.get('encoder', '?')}  "
                  f"{e['instruction']}")
    return 0
