"""`demo-checkpoint`: a tiny random-weight ImageWAM checkpoint in the official release layout, with a tiny
FLUX.2 autoencoder and a tiny Qwen3 text encoder beside it (`base/`), so every job runs without the 8 GB download."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import yaml

from edge.model_variants import demo_size
from edge.transforms import get_embodiment

from .model.action_expert import ActionExpertConfig
from .model.checkpoint import official_state_dict
from .model.mot import ImageWAMFlux2
from .model.text_encoder import make_demo_text_encoder
from .model.vision import make_vae

log = logging.getLogger(__name__)

TINY_EXPERT = ActionExpertConfig(action_dim=7, hidden=32, heads=2, head_dim=32, depth_double=2, depth_single=2)
DEMO_TEXT_LAYERS = (1, 2, 3)  # the tiny Qwen3 has 4 layers; the real one stacks (9, 18, 27)
DEMO_MAX_LENGTH = 128


def demo_stats(action_dim: int, state_dim: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)

    def entry(dim):
        lo = -rng.uniform(0.5, 1.5, dim)
        hi = rng.uniform(0.5, 1.5, dim)
        mean, std = (lo + hi) / 2, (hi - lo) / 4
        out = {}
        for pre in ("global_", "stepwise_"):
            out.update({pre + "min": lo.tolist(), pre + "max": hi.tolist(), pre + "mean": mean.tolist(),
                        pre + "std": std.tolist(), pre + "q01": (lo * 0.98).tolist(), pre + "q99": (hi * 0.98).tolist()})
        return {"default": out}

    return {"action": entry(action_dim), "state": entry(state_dim), "num_episodes": 0, "num_transition": 0}


def write_sample_images(out: Path, canvas_name: str, seed: int = 0) -> list[Path]:
    """One synthetic camera image per canvas slot (a table with coloured blocks), for `infer` examples."""
    from PIL import Image

    from edge.transforms import get_canvas

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for slot in get_canvas(canvas_name).slots:
        h, w = 240, 320
        img = np.zeros((h, w, 3), np.uint8)
        img[:] = (200, 190, 170)
        img[: h // 3] = (90, 110, 140)  # wall
        for color in ((200, 40, 40), (40, 80, 200), (40, 160, 60)):
            y, x = rng.integers(h // 3, h - 40), rng.integers(0, w - 40)
            img[y : y + 30, x : x + 30] = color
        path = out / f"{slot.name}.png"
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Random weights with unit-ish activations (default inits leave modulations near zero: nothing to test)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g) if name.endswith("scale") else 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)


def write_demo_checkpoint(out: str | Path, variant: str = "flux2-tiny", embodiment: str = "libero", seed: int = 0,
                          state_dim: int = 8, action_dim: int = 7) -> Path:
    record, size = demo_size(variant, f"{__name__}:write_demo_checkpoint")  # flux2-tiny
    backbone = size.config["backbone"]
    from .hf import quiet

    quiet()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    emb = get_embodiment(embodiment)
    expert = ActionExpertConfig(**{**TINY_EXPERT.to_dict(), "action_dim": action_dim})
    torch.manual_seed(seed)
    model = ImageWAMFlux2(backbone, expert, state_dim)
    _randomise(model, seed)
    payload = {**official_state_dict(model), "step": 0, "torch_dtype": "torch.float32"}
    torch.save(payload, out / "model.pt")
    (out / "dataset_stats.json").write_text(json.dumps(demo_stats(action_dim, state_dim, seed), indent=1))
    config = {
        "model": {"variant": "klein-tiny", "proprio_dim": state_dim, "pack_proprio_after_text": True,
                  "qwen_context_len": DEMO_MAX_LENGTH,
                  "action_dit_config": {"action_dim": action_dim, "hidden_dim": expert.hidden, "num_heads": expert.heads,
                                        "attn_head_dim": expert.head_dim, "num_layers_double": expert.depth_double,
                                        "num_layers_single": expert.depth_single, "mlp_ratio": expert.mlp_ratio}},
        # fields this package reads beyond the official config (documented in the README)
        "edge": {"variant": record.name, "embodiment": emb.name, "base": "base", "text_layers": list(DEMO_TEXT_LAYERS),
                 "axes_dim": list(backbone.axes_dim), "theta": backbone.theta, "horizon": emb.horizon},
    }
    (out / "train_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    base = out / "base"
    vae = make_vae()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        vae.bn.running_mean.copy_(0.1 * torch.randn(vae.bn.running_mean.shape, generator=g))
        vae.bn.running_var.copy_(torch.rand(vae.bn.running_var.shape, generator=g) * 0.5 + 0.5)
    vae.save_pretrained(str(base / "vae"))
    make_demo_text_encoder(base, seed=seed)
    write_sample_images(out / "samples", emb.canvas, seed)
    log.info("wrote demo checkpoint %s (%s, %s)", out, variant, embodiment)
    return out
