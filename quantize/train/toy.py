"""Training of the tiny ImageWAM on the toy reaching task (edge/task/world.py), on the CPU in minutes.

Data: expert demonstrations from seeded episodes (the executed targets get Gaussian noise so the demos visit states
off the expert's path and show the recovery); per step the rendered 64x64 image, the joint state [7] and the
expert's next H joint targets [H, 7]. Frozen parts: the tiny FLUX.2 autoencoder (its BatchNorm statistics are set
from the demo images, as the real release's are from its data) and the tiny Qwen3 (one embedding per instruction).
Trained: backbone + action expert + proprio encoder, with the flow-matching action loss
(x_s = (1-s) x0 + s e, target e - x0, s = shift 5 of u ~ U(0, 1), the schedule the sampler integrates).
Output: the official release layout (model.pt, dataset_stats.json, train_config.yaml with `edge:`, base/, samples/)."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import yaml

from edge.atomic import atomic_file, write_json, write_text
from edge.errors import ConfigError
from edge.task.world import BACKGROUND, TASK, TaskConfig, end_effector, expert_chunk, instructions, make_episode, render

from ..demo import DEMO_MAX_LENGTH, DEMO_TEXT_LAYERS, TINY_EXPERT, _randomise
from ..model.action_expert import ActionExpertConfig
from ..model.checkpoint import official_state_dict
from ..model.flux2 import FLUX2_PRESETS
from ..model.mot import ImageWAMFlux2
from ..model.text_encoder import Qwen3TextEncoder, make_demo_text_encoder
from ..model.vision import Flux2ImageTokenizer, make_vae

log = logging.getLogger(__name__)

TRAIN_SEED_BASE = 1_000_000  # training episodes use seeds TRAIN_SEED_BASE + i; evaluation uses small seeds
EMBODIMENT = "sim"  # 7 joints, the 64x64 single-camera canvas, min/max normalisation, replan 8


@dataclass(frozen=True)
class ToyTrainConfig:
    episodes: int = 6000  # enough scenes that the policy learns the rule, not the scenes (2000: it memorises them)
    stride: int = 2  # record every stride-th step of a demo (random phase): more scenes for the same data size
    steps: int = 3000
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    seed: int = 0
    demo_noise: float = 0.03  # std of the noise added to executed expert targets (world units)
    extra_steps: int = 4  # demo steps recorded after success (the policy learns to stay)
    shift: float = 5.0
    threads: int = 1  # one thread: bit-reproducible, and faster than 2 on a busy 2-core machine
    # the frozen image encoder is PRETRAINED first (as ImageWAM's FLUX.2 autoencoder is): an autoencoder on the demo
    # scenes, reconstruction weighted towards the non-background pixels + each latent pixel mapping linearly to the
    # 8x8-pixel averages of the image (the tokens keep the colours; a random encoder washes them out)
    vae_steps: int = 500
    vae_batch: int = 32
    vae_lr: float = 2e-3
    vae_foreground_weight: float = 10.0  # reconstruction weight of a block/end-effector pixel vs a background one
    vae_linear_weight: float = 10.0  # weight of the linear latent -> low-resolution image term
    vae_max_epochs: float = 4.0  # at most this many passes over the demo images (a tiny test run: a few steps)

    def __post_init__(self):
        if self.episodes < 1 or self.steps < 0 or self.batch < 1 or not self.lr > 0:
            raise ConfigError(f"toy training: episodes, batch >= 1, steps >= 0, lr > 0 ({self})")
        if (self.vae_steps < 0 or self.vae_batch < 1 or not self.vae_lr > 0 or self.vae_foreground_weight < 0
                or not self.vae_max_epochs > 0):
            raise ConfigError(f"toy training: vae_steps >= 0, vae_batch >= 1, vae_lr > 0, vae_foreground_weight >= 0, "
                             f"vae_max_epochs > 0 ({self})")


def generate_demos(n: int, seed: int, cfg: TaskConfig = TASK, noise: float = 0.03, extra_steps: int = 4,
                   stride: int = 1) -> dict:
    """Expert demonstrations -> {"images" [N, 64, 64, 3] uint8, "states" [N, J], "actions" [N, H, J], "instruction"
    [N] index into instructions(), "episode" [N]} (float32)."""
    rng = np.random.default_rng(seed)
    names = instructions()
    images, states, actions, instr, eps = [], [], [], [], []
    hold = cfg.hold_count(cfg.action_hz)
    for i in range(n):
        ep = make_episode(TRAIN_SEED_BASE + seed * 100_000 + i, cfg)
        q = ep.start_joints(cfg)
        run, left = 0, None
        phase = int(rng.integers(stride))
        for t in range(cfg.max_steps):
            chunk = expert_chunk(ep, q, cfg)  # [H, J]
            if t % stride == phase:
                images.append(render(ep, end_effector(q), cfg=cfg))
                states.append(q.copy())
                actions.append(chunk)
                instr.append(names.index(ep.instruction))
                eps.append(i)
            q = chunk[0] + np.concatenate([rng.normal(0.0, noise, 2), np.zeros(len(q) - 2)])
            run = run + 1 if np.linalg.norm(q[:2] - ep.target) <= cfg.success_radius else 0
            if left is None and run >= hold:
                left = extra_steps
            if left is not None:
                left -= 1
                if left < 0:
                    break
    return {"images": np.stack(images), "states": np.stack(states).astype(np.float32),
            "actions": np.stack(actions).astype(np.float32), "instruction": np.asarray(instr, np.int64),
            "episode": np.asarray(eps, np.int64)}


def dataset_stats(states: np.ndarray, actions: np.ndarray, episodes: int) -> dict:
    """The official dataset_stats.json layout from the demos (global over all steps; stepwise per chunk index)."""

    def entry(x: np.ndarray, stepwise: np.ndarray) -> dict:
        out = {}
        for pre, v in (("global_", x), ("stepwise_", stepwise)):
            out.update({pre + "min": v.min(0).tolist(), pre + "max": v.max(0).tolist(), pre + "mean": v.mean(0).tolist(),
                        pre + "std": v.std(0).tolist(), pre + "q01": np.quantile(v, 0.01, axis=0).tolist(),
                        pre + "q99": np.quantile(v, 0.99, axis=0).tolist()})
        return {"default": out}

    a = actions.reshape(-1, actions.shape[-1]).astype(np.float64)  # [N*H, J]
    s = states.astype(np.float64)
    return {"action": entry(a, a), "state": entry(s, s), "num_episodes": int(episodes), "num_transition": int(len(s))}


def minmax(stats_entry: dict) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) of edge.normalize's min/max mapping, for the torch side of training."""
    from edge.normalize import make_normalizer

    n = make_normalizer(stats_entry, "min/max")
    return n.scale.astype(np.float32), n.offset.astype(np.float32)


@torch.no_grad()
def encode_images(tokenizer: Flux2ImageTokenizer, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """[N, H, W, 3] uint8 -> image tokens [N, H/16 * W/16, 128] float32."""
    from edge.transforms import to_model_pixels

    out = []
    for i in range(0, len(images), batch):
        px = torch.from_numpy(np.concatenate([to_model_pixels(im) for im in images[i : i + batch]]))  # [b, 3, H, W]
        out.append(tokenizer(px).float())
    return torch.cat(out)


@torch.no_grad()
def set_bn_statistics(vae, images: np.ndarray) -> None:
    """The autoencoder's BatchNorm running statistics from the demo images (the tokens come out standardised)."""
    vae.bn.running_mean.zero_()
    vae.bn.running_var.fill_(1.0 - float(vae.config.batch_norm_eps))
    tokens = encode_images(Flux2ImageTokenizer(vae), images)  # [N, T, C], standardised by (0, 1) = raw
    flat = tokens.reshape(-1, tokens.shape[-1]).double()
    vae.bn.running_mean.copy_(flat.mean(0).to(vae.bn.running_mean.dtype))
    vae.bn.running_var.copy_((flat.var(0) - float(vae.config.batch_norm_eps)).clamp_min(1e-6).to(vae.bn.running_var.dtype))


def _pixels(images: np.ndarray) -> torch.Tensor:
    """[N, H, W, 3] uint8 -> [N, 3, H, W] float32 in [-1, 1] (edge.transforms.to_model_pixels)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() * (2.0 / 255.0) - 1.0


def pretrain_vae(vae, images: np.ndarray, steps: int, batch: int = 32, lr: float = 2e-3, foreground_weight: float = 10.0,
                 linear_weight: float = 10.0, seed: int = 0, progress: Callable[[str], None] = lambda s: None) -> dict:
    """Train the tiny FLUX.2 autoencoder as an autoencoder on task-camera scenes [N, H, W, 3] uint8 (in place).

    Loss per batch: mean squared reconstruction error (encoder posterior mean -> decoder), each pixel weighted
    1 + `foreground_weight` where it differs from the table's colour (the blocks and the end effector are a few % of
    the pixels), normalised by the mean weight; plus `linear_weight` x the error of a learned 1x1 linear map from each
    latent pixel [C] to the image's 8x8-pixel average [3] under it (keeps every token's colour content linearly
    readable). Returns {"loss", "reconstruction", "linear"} of the last 50 steps."""
    vae.train()
    g = torch.Generator().manual_seed(seed)
    latent = int(vae.config.latent_channels)
    down = 2 ** (len(vae.config.block_out_channels) - 1)  # latent stride (8)
    head = torch.nn.Conv2d(latent, 3, 1)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) / latent ** 0.5)
        head.bias.zero_()
    params = list(vae.encoder.parameters()) + list(vae.decoder.parameters()) + list(head.parameters())
    for m in (vae.quant_conv, vae.post_quant_conv):
        if m is not None:
            params += list(m.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warm) *
                                              0.5 * (1 + math.cos(math.pi * min(i, steps) / max(1, steps))))
    bg = torch.tensor(BACKGROUND, dtype=torch.float32).view(1, 3, 1, 1) * (2.0 / 255.0) - 1.0
    hist: list[tuple[float, float, float]] = []
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(images), (batch,), generator=g)
        x = _pixels(images[idx.numpy()])  # [b, 3, H, W]
        moments = vae.encoder(x)
        if vae.quant_conv is not None:
            moments = vae.quant_conv(moments)
        z = moments.chunk(2, dim=1)[0]  # posterior mean [b, C, H/8, W/8]
        rec = vae.decoder(vae.post_quant_conv(z) if vae.post_quant_conv is not None else z)
        w = 1.0 + foreground_weight * ((x - bg).abs().amax(1, keepdim=True) > 0.05).float()  # [b, 1, H, W]
        rec_loss = (w * (rec - x).pow(2)).mean() / w.mean()
        lin_loss = (head(z) - torch.nn.functional.avg_pool2d(x, down)).pow(2).mean()
        loss = rec_loss + linear_weight * lin_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        hist.append((float(loss.detach()), float(rec_loss.detach()), float(lin_loss.detach())))
        if (step + 1) % 50 == 0 or step + 1 == steps:
            m = np.mean(hist[-50:], axis=0)
            progress(f"autoencoder step {step + 1}/{steps}: loss {m[0]:.4f} (reconstruction {m[1]:.4f}, linear "
                     f"{m[2]:.4f}) ({time.perf_counter() - t0:.0f} s)")
    vae.eval()
    m = np.mean(hist[-50:], axis=0) if hist else (float("nan"),) * 3
    return {"loss": float(m[0]), "reconstruction": float(m[1]), "linear": float(m[2]),
            "seconds": round(time.perf_counter() - t0, 1)}


def token_colour_r2(tokens: np.ndarray, images: np.ndarray, n_train: Optional[int] = None) -> list[float]:
    """Linear probe: each token [N, T, C] -> the mean red/green/blue of its 16x16-pixel patch of images [N, H, W, 3];
    least squares (with a bias) fitted on the first half of the images, R^2 per channel on the second half."""
    n, t, c = tokens.shape
    h, w = images.shape[1] // 16, images.shape[2] // 16
    target = images.reshape(n, h, 16, w, 16, 3).astype(np.float64).mean(axis=(2, 4)).reshape(n, h * w, 3)  # [N, T, 3]
    n_train = n // 2 if n_train is None else n_train
    x = np.concatenate([tokens.reshape(n * t, c).astype(np.float64), np.ones((n * t, 1))], axis=1)
    y = target.reshape(n * t, 3)
    split = n_train * t
    coef, *_ = np.linalg.lstsq(x[:split], y[:split], rcond=None)
    pred = x[split:] @ coef
    resid = ((y[split:] - pred) ** 2).sum(0)
    total = ((y[split:] - y[split:].mean(0)) ** 2).sum(0)
    return [float(v) for v in 1.0 - resid / np.maximum(total, 1e-12)]


def padded_text(embeddings: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-instruction [T_i, D] -> ([K, T_max, D], valid mask [K, T_max]); padding at the end, masked everywhere."""
    t_max = max(e.shape[0] for e in embeddings)
    text = torch.zeros(len(embeddings), t_max, embeddings[0].shape[1])
    mask = torch.zeros(len(embeddings), t_max, dtype=torch.bool)
    for k, e in enumerate(embeddings):
        text[k, : e.shape[0]] = torch.from_numpy(e)
        mask[k, : e.shape[0]] = True
    return text, mask


def flow_loss(model: ImageWAMFlux2, text, text_mask, state, image_tokens, x0, generator, shift: float,
              prefix_cos, prefix_sin, action_cos, action_sin) -> torch.Tensor:
    """Flow-matching action loss on one batch: text [B, T, D] + mask, state [B, P] and x0 [B, H, A] normalised."""
    b = x0.shape[0]
    context, key_mask_text = model.pack_context(text, state, text_mask)  # [B, T+1, D], [B, T+1] or None
    key_mask = None  # every instruction has the same length: no padding, no mask (the fast attention path)
    if key_mask_text is not None:
        ones = torch.ones(b, image_tokens.shape[1], dtype=torch.bool)
        key_mask = torch.cat([key_mask_text, ones], dim=1)  # [B, T+1+N]
    keys, values = model.prefill(context, image_tokens, prefix_cos, prefix_sin, key_mask)
    u = torch.rand(b, generator=generator)
    s = shift * u / (1 + (shift - 1) * u)  # [B]
    e = torch.randn(x0.shape, generator=generator)
    xs = (1 - s)[:, None, None] * x0 + s[:, None, None] * e
    v = model.velocity(xs, s, keys, values, action_cos, action_sin, key_mask)
    return (v - (e - x0)).pow(2).mean()


def train(out: str | Path, cfg: ToyTrainConfig = ToyTrainConfig(), task: TaskConfig = TASK,
          progress: Callable[[str], None] = lambda s: None, random_weights: bool = False) -> dict:
    """Generate demos, train, write the release directory OUT. `random_weights`: skip training and write the
    random-weight baseline with the same stats, base and layout. Returns a summary (also in OUT/training.json)."""
    from ..hf import quiet

    quiet()
    t_start = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    progress(f"generating {cfg.episodes} expert episodes")
    demos = generate_demos(cfg.episodes, cfg.seed, task, cfg.demo_noise, cfg.extra_steps, cfg.stride)
    n, horizon, action_dim = demos["actions"].shape
    state_dim = demos["states"].shape[1]
    stats = dataset_stats(demos["states"], demos["actions"], cfg.episodes)
    base = out / "base"
    torch.manual_seed(cfg.seed + 1)  # the autoencoder's initial weights come from the seed
    vae = make_vae()
    vae_steps = 0 if cfg.vae_steps == 0 else min(cfg.vae_steps, max(1, math.ceil(cfg.vae_max_epochs * n / cfg.vae_batch)))
    progress(f"{n} demo steps; pretraining the tiny autoencoder on them ({vae_steps} steps)")
    vae_summary = pretrain_vae(vae, demos["images"], vae_steps, cfg.vae_batch, cfg.vae_lr, cfg.vae_foreground_weight,
                               cfg.vae_linear_weight, seed=cfg.seed + 3, progress=progress)
    vae.eval()
    set_bn_statistics(vae, demos["images"][:: max(1, n // 2000)])
    progress("encoding the demo images with the frozen autoencoder")
    vae.save_pretrained(str(base / "vae"))
    tokenizer = Flux2ImageTokenizer(vae.requires_grad_(False))
    image_tokens = encode_images(tokenizer, demos["images"])  # [N, 16, 128]
    probe = demos["images"][:: max(1, n // 4000)]
    vae_summary["token_colour_r2"] = [round(v, 4) for v in token_colour_r2(encode_images(tokenizer, probe).numpy(), probe)]
    progress(f"linear probe of the token colours: R^2 red/green/blue {vae_summary['token_colour_r2']}")
    make_demo_text_encoder(base, seed=cfg.seed)
    encoder = Qwen3TextEncoder(base / "text_encoder", base / "tokenizer", layers=DEMO_TEXT_LAYERS, max_length=DEMO_MAX_LENGTH)
    text_all, text_mask_all = padded_text([encoder.encode(t) for t in instructions()])  # [K, T, D], [K, T]

    backbone = FLUX2_PRESETS["flux2-tiny"]
    expert = ActionExpertConfig(**{**TINY_EXPERT.to_dict(), "action_dim": action_dim})
    model = ImageWAMFlux2(backbone, expert, state_dim)
    if random_weights:
        _randomise(model, cfg.seed)
    s_scale, s_off = minmax(stats["state"]["default"])
    a_scale, a_off = minmax(stats["action"]["default"])
    states = torch.from_numpy(np.clip(demos["states"] * s_scale + s_off, -5, 5))  # [N, P]
    x0_all = torch.from_numpy(np.clip(demos["actions"] * a_scale + a_off, -5, 5))  # [N, H, A]
    instr = torch.from_numpy(demos["instruction"])
    t_len = text_all.shape[1]
    masks = None if bool(text_mask_all.all()) else text_mask_all
    prefix_cos, prefix_sin = (torch.from_numpy(a) for a in model.prefix_rope(t_len + 1, 4, 4))
    action_cos, action_sin = (torch.from_numpy(a) for a in model.action_rope(horizon))
    steps = 0 if random_weights else cfg.steps
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / cfg.warmup) *
                                              0.5 * (1 + math.cos(math.pi * min(i, steps) / max(1, steps))))
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    model.train()
    losses, t_train = [], time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, n, (cfg.batch,), generator=gen)
        k = instr[idx]
        loss = flow_loss(model, text_all[k], None if masks is None else masks[k], states[idx], image_tokens[idx], x0_all[idx], gen,
                         cfg.shift, prefix_cos, prefix_sin, action_cos, action_sin)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 100 == 0 or step + 1 == steps:
            progress(f"step {step + 1}/{steps}: loss {np.mean(losses[-100:]):.4f} "
                     f"({time.perf_counter() - t_train:.0f} s)")
    model.eval()
    train_s = time.perf_counter() - t_train
    write_release(out, model, stats, steps, state_dim, action_dim, horizon, backbone)
    _write_samples(out / "samples", task)
    summary = {"config": asdict(cfg), "task": asdict(task), "demo_steps": int(n), "train_steps": steps,
               "random_weights": bool(random_weights), "autoencoder": vae_summary, "final_loss": float(np.mean(losses[-100:])) if losses else None,
               "train_seconds": round(train_s, 1), "total_seconds": round(time.perf_counter() - t_start, 1),
               "torch": torch.__version__}
    write_json(out / "training.json", summary)
    return summary


def write_release(out: Path, model: ImageWAMFlux2, stats: dict, step: int, state_dim: int, action_dim: int,
                  horizon: int, backbone) -> None:
    """model.pt, dataset_stats.json and train_config.yaml (with the `edge:` section) in the official layout."""
    payload = {**official_state_dict(model), "step": int(step), "torch_dtype": "torch.float32"}
    with atomic_file(out / "model.pt") as f:
        torch.save(payload, f)
    write_json(out / "dataset_stats.json", stats)
    e = model.expert_cfg
    config = {
        "model": {"variant": "klein-tiny", "proprio_dim": state_dim, "pack_proprio_after_text": True,
                  "qwen_context_len": DEMO_MAX_LENGTH,
                  "action_dit_config": {"action_dim": action_dim, "hidden_dim": e.hidden, "num_heads": e.heads,
                                        "attn_head_dim": e.head_dim, "num_layers_double": e.depth_double,
                                        "num_layers_single": e.depth_single, "mlp_ratio": e.mlp_ratio}},
        "task": {"name": "toy-reach", "instructions": instructions()},
        "edge": {"embodiment": EMBODIMENT, "base": "base", "text_layers": list(DEMO_TEXT_LAYERS),
                 "axes_dim": list(backbone.axes_dim), "theta": backbone.theta, "horizon": int(horizon)},
    }
    write_text(out / "train_config.yaml", yaml.safe_dump(config, sort_keys=False))


def _write_samples(out: Path, task: TaskConfig) -> None:
    """samples/main.png: the first evaluation episode's first frame (for `infer` examples)."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    ep = make_episode(0, task)
    Image.fromarray(render(ep, ep.start, cfg=task)).save(out / "main.png")
    write_json(out / "episode_0.json", {"instruction": ep.instruction, "state": ep.start_joints(task).tolist()})


def write_random_weights(src: str | Path, out: str | Path, seed: int = 0) -> Path:
    """The random-weight baseline of a trained release: the same layout, stats, base and architecture, the weights
    replaced by the demo checkpoint's random initialisation (`quantize.demo._randomise`)."""
    import shutil

    from ..model.checkpoint import load_checkpoint

    src, out = Path(src), Path(out)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("model.pt", "training.json"))
    ckpt = load_checkpoint(src)
    model = ImageWAMFlux2(ckpt.model.backbone_cfg, ckpt.model.expert_cfg, ckpt.model.proprio_dim)
    _randomise(model, seed)
    with atomic_file(out / "model.pt") as f:
        torch.save({**official_state_dict(model), "step": 0, "torch_dtype": "torch.float32"}, f)
    return out
