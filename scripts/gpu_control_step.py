"""The real-size FLUX.2 klein 4B ImageWAM control step on a CUDA GPU (torch, BF16), official-style eager vs ours.

    python scripts/gpu_control_step.py --out results/ [--iterations 50] [--variant flux2-4b]
    python scripts/gpu_control_step.py --tiny --device cpu     # a small configuration: the CPU smoke test (CI)

The model is built directly on the GPU in its real configuration (edge/model_configs.py) with RANDOM weights (the
rule of quantize.streaming.RandomInit: matrices N(0, 1/fan_in), norm scales 1 + 0.2 N, vectors 0.1 N), as are the
FLUX.2 autoencoder and the Qwen3 text encoder (transformers' Qwen3 in its real configuration). No weights are read.
Latency does not depend on the values; the outputs are compared between pipelines, not against a release.

Pipelines, each over the same observations and noise (LIBERO canvas 224x448 -> 392 image tokens, 16x7 actions,
10 Euler steps):
  official-eager  the official evaluation's structure: the instruction re-encoded by Qwen3 every step (padded to
                  512 tokens), prefill over 513 text+proprio positions with a key mask, 10 eager denoise steps
  host-kv         our previous backend contract: prompt cache (text computed once, trimmed to its valid tokens),
                  but the K/V cache goes to the host after the prefill and back to the GPU at every denoise step
  resident-eager  ours without CUDA graphs: K/V resident on the GPU, eager launches
  ours            K/V resident, the prefill and the whole 10-step denoise loop as CUDA graphs, FP32 Euler on the GPU
  ours-compiled   ours with torch.compile (inductor) inside the graphs (not run by default: minutes of compiling)
Per pipeline: p50/p99 per stage and whole step (ms), host<->device bytes per step by stage, peak GPU memory.
The roofline (edge/roofline.py, dense BF16 at this GPU's measured matmul rate and copy bandwidth) gives the
efficiency of each stage of `ours`. Writes OUT/gpu_control_step.json and prints a table."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEXT_TOKENS = 44  # the prompt template + a short LIBERO instruction in the Qwen3 chat template (edge/roofline.py)
PADDED = 512


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def init_random_(module, seed: int) -> None:
    """quantize.streaming.RandomInit's rule, generated on the module's device."""
    import torch

    g = torch.Generator(device=next(module.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1:
                parent = name.rsplit(".", 2)[-2] if name.count(".") else ""
                is_scale = name.endswith("scale") or ("norm" in parent and name.endswith("weight"))
                noise = torch.randn(p.shape, generator=g, device=p.device, dtype=torch.float32)
                p.copy_(1.0 + 0.2 * noise if is_scale else 0.1 * noise)
            else:
                fan_in = p.numel() // max(1, p.shape[0])
                for r in range(0, p.shape[0], 4096):  # row chunks: bounded float32 scratch
                    rows = p[r : r + 4096]
                    rows.copy_(torch.randn(rows.shape, generator=g, device=p.device) * fan_in ** -0.5)


def build(args, dev, dtype):
    """(model, tokenizer, text_encoder, text_layers, canvas, spec)."""
    import torch
    from transformers import Qwen3Config, Qwen3Model

    from edge.model_configs import FLUX2_PRESETS, FLUX2_VAE, TEXT_ENCODERS, Flux2Config, flux2_expert
    from quantize.model.mot import ImageWAMFlux2
    from quantize.model.vision import TINY_VAE, Flux2ImageTokenizer, make_vae

    if args.tiny:
        backbone = Flux2Config(hidden=64, heads=2, depth_double=1, depth_single=1, context_dim=96, axes_dim=(8, 8, 8, 8))
        qwen = dict(hidden_size=32, num_hidden_layers=3, intermediate_size=64, num_attention_heads=2,
                    num_key_value_heads=1, head_dim=16, vocab_size=1000)
        layers, vae_cfg = (1, 2, 3), TINY_VAE
    else:
        backbone = FLUX2_PRESETS[args.variant]
        qwen, layers, vae_cfg = dict(TEXT_ENCODERS[args.variant]), (9, 18, 27), FLUX2_VAE
        qwen["num_hidden_layers"] = 27  # layers past the deepest one read do not change the embedding
    expert = flux2_expert(backbone, 7)
    with torch.device("meta"):
        model = ImageWAMFlux2(backbone, expert, 8)
    model = model.to_empty(device=dev).to(dtype).eval().requires_grad_(False)
    init_random_(model, 0)
    vae = make_vae(**vae_cfg).to(dev, dtype).eval().requires_grad_(False)
    init_random_(vae, 1)
    with torch.no_grad():
        vae.bn.running_var.fill_(1.0)
        vae.bn.running_mean.zero_()
    qcfg = Qwen3Config(**qwen)
    with torch.device(dev):  # transformers' own initialisation, on the device (its rotary buffers included)
        text = Qwen3Model(qcfg)
    text = text.to(dtype).eval().requires_grad_(False)
    return model, Flux2ImageTokenizer(vae), text, layers, backbone


def make_policy(backend, backbone, text_embedding):
    from edge.normalize import Normalizer
    from edge.policy import ImageWAMPolicy, PolicySpec

    spec = PolicySpec(variant="flux2", action_dim=7, state_dim=8, text_width=backbone.context_dim,
                      head_dim=backbone.head_dim, axes_dim=backbone.axes_dim, theta=backbone.theta,
                      embodiment="libero", text_encoder="random-qwen3", horizon=16, steps=10)
    norm = lambda d: Normalizer(np.full(d, 1.0), np.zeros(d), "min/max")  # noqa: E731
    return ImageWAMPolicy(backend, spec, lambda instruction: text_embedding, norm(8), norm(7))


def prompt_ids(text_encoder, dev):
    """A stand-in tokenised prompt: TEXT_TOKENS valid ids padded to 512 (ids [1, 512], mask [1, 512] bool)."""
    import torch

    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, text_encoder.config.vocab_size, (1, PADDED), generator=g)
    return ids.to(dev), (torch.arange(PADDED) < TEXT_TOKENS)[None].to(dev)


def encode_text(text_encoder, ids, mask, layers):
    """Hidden states of `layers` stacked: [1, T, 3*d] (the official prompt embedding)."""
    import torch

    with torch.no_grad():
        out = text_encoder(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True)
    return torch.cat([out.hidden_states[k] for k in layers], dim=-1)


class OfficialEager:
    """The official evaluation's structure on the same networks: text re-encoded and padded every step."""

    def __init__(self, policy, model, tokenizer, text_encoder, layers, dev, dtype):
        self.policy, self.model, self.tokenizer, self.text = policy, model, tokenizer, text_encoder
        self.layers, self.dev, self.dtype = layers, dev, dtype
        rows, cols = policy.canvas.token_grid
        cos, sin = model.prefix_rope(PADDED + 1, rows, cols)
        import torch

        self.cos, self.sin = torch.from_numpy(cos).to(dev), torch.from_numpy(sin).to(dev)
        acos, asin = model.action_rope(policy.spec.horizon)
        self.acos, self.asin = torch.from_numpy(acos).to(dev), torch.from_numpy(asin).to(dev)
        self.ids, self.mask = prompt_ids(text_encoder, dev)

    def infer(self, obs, noise):
        import torch

        from edge.transforms import compose_canvas, to_model_pixels

        sync, clock, t = torch.cuda.synchronize if self.dev.type == "cuda" else (lambda: None), time.perf_counter, {}
        with torch.no_grad():
            t0 = clock()
            text = encode_text(self.text, self.ids, self.mask, self.layers)  # [1, 512, 3*d]
            sync()
            t["text"] = (clock() - t0) * 1e3
            t0 = clock()
            pixels = to_model_pixels(compose_canvas(list(obs["images"]), self.policy.canvas))
            state = torch.from_numpy(self.policy.state_norm.forward(np.asarray(obs["state"]))[None]).to(self.dev)
            tokens = self.tokenizer(torch.from_numpy(pixels).to(self.dev))
            sync()
            t["vision_encoder"] = (clock() - t0) * 1e3
            t0 = clock()
            context, cmask = self.model.pack_context(text, state.to(self.dtype), self.mask)
            n = tokens.shape[1]
            key_mask = torch.cat([cmask, torch.ones(1, n, dtype=torch.bool, device=self.dev)], dim=1)  # [1, 513+N]
            keys, values = self.model.prefill(context, tokens.to(self.dtype), self.cos, self.sin, key_mask)
            sync()
            t["prefill"] = (clock() - t0) * 1e3
            t0 = clock()
            x = torch.from_numpy(noise).to(self.dev)
            sig = self.policy.sigmas
            for i in range(len(sig) - 1):
                s = torch.full((1,), float(sig[i]), dtype=torch.float32, device=self.dev)
                v = self.model.velocity(x.to(self.dtype), s, keys, values, self.acos, self.asin, key_mask)
                x = x + v.float() * float(np.float32(sig[i + 1] - sig[i]))
            x = x.cpu().numpy()
            t["denoise"] = (clock() - t0) * 1e3
        t["total"] = sum(t.values())
        return {"actions_normalized": x[0], "timings_ms": t, "transfer_bytes": {"h2d": {}, "d2h": {}}}


def observation(policy, k: int) -> dict:
    rng = np.random.default_rng(k)
    images = [rng.integers(0, 255, (s.height, s.width, 3), dtype=np.uint8) for s in policy.canvas.slots]
    return {"images": images, "state": rng.uniform(-1, 1, 8), "instruction": "pick up the black bowl"}


def time_pipeline(name, infer, policy, iterations, warmup, dev):
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    stages, totals, traffic, outs = {}, [], None, []
    for k in range(warmup + iterations):
        obs = observation(policy, k % 4)
        noise = np.random.default_rng(100 + k % 4).standard_normal((1, 16, 7), dtype=np.float32)
        t0 = time.perf_counter()
        out = infer(obs, noise)
        wall = (time.perf_counter() - t0) * 1e3
        if k == 0:
            first_ms = wall  # compile / graph capture happen here
        if k < warmup:
            if k < 4:
                outs.append(out["actions_normalized"])
            continue
        totals.append(wall)
        for s, ms in out["timings_ms"].items():
            stages.setdefault(s, []).append(ms)
        traffic = out.get("transfer_bytes")
    pct = lambda v: {"p50": round(statistics.median(v), 3), "p99": round(float(np.percentile(v, 99)), 3),  # noqa: E731
                     "mean": round(statistics.fmean(v), 3)}
    res = {"step_ms": pct(totals), "stages_ms": {s: pct(v) for s, v in stages.items() if s != "total"},
           "transfer_bytes": traffic, "iterations": iterations, "first_call_ms": round(first_ms, 1)}
    if dev.type == "cuda":
        res["gpu_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    say(f"  {name:<15} step p50 {res['step_ms']['p50']:9.2f} ms  p99 {res['step_ms']['p99']:9.2f} ms  "
        + "  ".join(f"{s} {v['p50']:.2f}" for s, v in res["stages_ms"].items()))
    return res, outs


def roofline(backbone_variant: str, matmul_tflops: float, bandwidth_gbs: float, text_tokens: int) -> dict:
    from edge.roofline import Target, roofline_ms, step_costs

    target = Target("this-gpu", matmul_tflops * 2, matmul_tflops, matmul_tflops * 2, bandwidth_gbs, 0)
    return {c.name: roofline_ms(c, target, "fp16") for c in step_costs(backbone_variant, "fp16", text_tokens)}


def ceilings(dev) -> dict:
    """This GPU's dense BF16 matmul rate and device copy bandwidth, measured (the roofline's ceilings)."""
    import torch

    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    tflops = 10 * 2 * 8192**3 / (time.perf_counter() - t) / 1e12
    src = torch.empty(2 << 30, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(5):
        dst.copy_(src)
    torch.cuda.synchronize()
    gbs = 5 * 2 * src.numel() / (time.perf_counter() - t) / 1e9
    del a, b, src, dst
    torch.cuda.empty_cache()
    return {"bf16_matmul_tflops": round(tflops, 1), "copy_gbs": round(gbs, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from edge.model_variants import get_variant

    ap.add_argument("--variant", default="flux2-4b", choices=[s.name for s in get_variant("flux2").sizes if s.real_size])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--tiny", action="store_true", help="small configuration (the CPU smoke test)")
    ap.add_argument("--pipelines", default="official-eager,host-kv,resident-eager,ours")
    ap.add_argument("--out", default=".")
    args = ap.parse_args()
    import logging

    import torch

    logging.basicConfig(level=logging.WARNING)
    from edge.backends.host_loop import HostLoop
    from quantize.model.checkpoint import ImageWAMCheckpoint
    from quantize.torch_backend import TorchBackend

    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print(f"error: --device {args.device}: this torch ({torch.__version__}) sees no CUDA GPU; run it on a machine "
              "with an NVIDIA GPU and a CUDA build of torch, or try the flow small on the CPU: --tiny --device cpu",
              file=sys.stderr)
        return 1
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    result: dict = {"variant": "tiny" if args.tiny else args.variant, "device": str(dev), "torch": torch.__version__,
                    "dtype": str(dtype).replace("torch.", ""), "text_tokens": TEXT_TOKENS, "padded_text": PADDED}
    if dev.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        result["ceilings"] = ceilings(dev)
        say(f"{result['gpu']}: {result['ceilings']}")
    t = time.perf_counter()
    model, tokenizer, text_encoder, layers, backbone = build(args, dev, dtype)
    params = sum(p.numel() for p in model.parameters())
    result["parameters"] = {"imagewam": params, "text_encoder": sum(p.numel() for p in text_encoder.parameters())}
    result["build_s"] = round(time.perf_counter() - t, 1)
    if dev.type == "cuda":
        result["gpu_weights_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2)
    say(f"built {params / 1e9:.3f} B params (+ text encoder) in {result['build_s']} s")
    ids, mask = prompt_ids(text_encoder, dev)  # the prompt cache's entry: the same prompt's valid rows
    text_embedding = encode_text(text_encoder, ids, mask, layers)[0, :TEXT_TOKENS].float().cpu().numpy()
    ckpt = ImageWAMCheckpoint(ROOT, model, 0, dtype)

    class HostKV(HostLoop):  # the previous contract: K/V through host numpy arrays at every denoise step
        name = "host-kv"

        def __init__(self, inner):
            self.inner = inner

        def run(self, component, inputs):
            return self.inner.run(component, inputs)

        @property
        def traffic(self):
            return self.inner.traffic  # the torch backend counts what its run() moves

    pipelines = {}
    for name in args.pipelines.split(","):
        if name == "official-eager":
            pipelines[name] = lambda: OfficialEager(make_policy(TorchBackend(ckpt, tokenizer, device=str(dev),
                                                                             cuda_graphs=False), backbone, text_embedding),
                                                    model, tokenizer, text_encoder, layers, dev, dtype)
        elif name == "host-kv":
            pipelines[name] = lambda: make_policy(HostKV(TorchBackend(ckpt, tokenizer, device=str(dev), cuda_graphs=False)),
                                                  backbone, text_embedding)
        elif name == "resident-eager":
            pipelines[name] = lambda: make_policy(TorchBackend(ckpt, tokenizer, device=str(dev), cuda_graphs=False),
                                                  backbone, text_embedding)
        elif name == "ours-compiled":
            pipelines[name] = lambda: make_policy(TorchBackend(ckpt, tokenizer, device=str(dev), compile=True,
                                                               cuda_graphs=dev.type == "cuda"), backbone, text_embedding)
        elif name == "ours":
            pipelines[name] = lambda: make_policy(TorchBackend(ckpt, tokenizer, device=str(dev),
                                                               cuda_graphs=dev.type == "cuda"), backbone, text_embedding)
        else:
            ap.error(f"unknown pipeline {name!r}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save():  # after every pipeline: a run stopped at its time limit keeps what it measured
        tmp = out / "gpu_control_step.json.tmp"
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(out / "gpu_control_step.json")

    result["pipelines"], outputs = {}, {}
    for name, make in pipelines.items():
        try:
            runner = make()
            policy = runner.policy if isinstance(runner, OfficialEager) else runner
            infer = (lambda obs, noise, r=runner: r.infer(obs, noise=noise))
            t_first = time.perf_counter()
            res, outs = time_pipeline(name, infer, policy, args.iterations, args.warmup, dev)
            res["wall_s_with_warmup"] = round(time.perf_counter() - t_first, 1)
            result["pipelines"][name], outputs[name] = res, outs
        except Exception as exc:  # one failing pipeline must not lose the others' numbers (device time is scarce)
            traceback.print_exc()
            result["pipelines"][name] = {"error": f"{type(exc).__name__}: {exc}"}
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        save()
    ref_name = "resident-eager" if "resident-eager" in outputs else "ours"
    ref = outputs.get(ref_name)
    if ref:
        result[f"max_abs_diff_vs_{ref_name.replace('-', '_')}"] = {
            n: float(max(np.max(np.abs(a - b)) for a, b in zip(o, ref))) for n, o in outputs.items() if o}
    if dev.type == "cuda" and not args.tiny:
        c = result["ceilings"]
        roof = roofline(args.variant, c["bf16_matmul_tflops"], c["copy_gbs"], TEXT_TOKENS)
        ours = result["pipelines"].get("ours", {}).get("stages_ms", {})
        names = {"vision_encoder": "vision_encoder", "prefill": "prefill", "denoise": "denoise_step"}
        result["roofline"] = {s: {"roofline_ms": round(roof[c_]["ms"], 3),
                                  "measured_p50_ms": ours.get(s, {}).get("p50"),
                                  "efficiency": (round(roof[c_]["ms"] / ours[s]["p50"], 3) if s in ours else None)}
                              for s, c_ in names.items() if c_ in roof}
    save()
    print(json.dumps(result, indent=1))
    return 0 if all("error" not in p for p in result["pipelines"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
