"""Loading of the official ImageWAM FLUX.2 release directory:

    DIR/model.pt              {"mot": state_dict, "step", "torch_dtype", "proprio_encoder": {"weight", "bias"}}
    DIR/dataset_stats.json    normalisation statistics
    DIR/train_config.yaml     (optional) training config, cross-checked against the tensor shapes
    DIR/prompts.npz           (optional) the checkpoint's prompt cache (edge/prompt_cache.py), read only
    BASE/vae                  the FLUX.2 klein autoencoder (diffusers layout): always needed (the vision encoder)
    BASE/text_encoder, BASE/tokenizer   needed only for instructions no prompt cache holds (quantize/torch_backend.py)

Strict: every tensor is used; missing, unexpected or mis-shaped keys are reported by name. Memory-frugal: the file
is memory-mapped (`weights_only=True, mmap=True`), the model is built on the meta device and the tensors are
assigned in their stored dtype (a bf16 checkpoint stays bf16); the backbone's alias keys are dropped, not copied.
The architecture is inferred from the shapes, so fine-tuned variants of other sizes load."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edge.errors import CheckpointError

from .action_expert import ActionExpertConfig
from .flux2 import Flux2Config
from .mot import ImageWAMFlux2

log = logging.getLogger(__name__)

VIDEO = "mixtures.video.transformer."
VIDEO_ALIASES = ("mixtures.video.double_blocks.", "mixtures.video.single_blocks.")
ACTION = "mixtures.action."
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ImageWAMCheckpoint:
    """A loaded release directory (any variant: `model` is ImageWAMFlux2 or ImageWAMOvisU1)."""

    directory: Path
    model: torch.nn.Module
    step: int
    dtype: torch.dtype
    train_config: dict = field(default_factory=dict)

    @property
    def stats_path(self) -> Path:
        return self.directory / "dataset_stats.json"


def parse_dtype(value) -> torch.dtype:
    name = str(value).replace("torch.", "")
    if name not in DTYPES:
        raise CheckpointError(f"unsupported torch_dtype {value!r} in model.pt; expected one of {sorted(DTYPES)}")
    return DTYPES[name]


def _count_blocks(keys, prefix: str) -> int:
    idx = {int(m.group(1)) for k in keys if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    if idx and idx != set(range(max(idx) + 1)):
        raise CheckpointError(f"block indices under {prefix} are not contiguous: {sorted(idx)}")
    return len(idx)


def _shape(sd: dict, key: str, where: str) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"{where}: missing tensor {key!r}; cannot infer the architecture without it "
                              "(is this an ImageWAM FLUX.2 checkpoint?)")
    return tuple(sd[key].shape)


def infer_configs(video: dict, action: dict, proprio: dict, where: str, axes_dim=None, theta=2000.0):
    """Architecture from tensor shapes (video/action keys without their `mixtures.*` prefix)."""
    hidden, in_ch = _shape(video, "img_in.weight", where)
    context_dim = _shape(video, "txt_in.weight", where)[1]
    head_dim = _shape(video, "double_blocks.0.img_attn.norm.query_norm.scale", where)[0]
    mlp_hidden = _shape(video, "double_blocks.0.img_mlp.2.weight", where)[1]
    if axes_dim is None:
        axes_dim = (head_dim // 4,) * 4
    backbone = Flux2Config(hidden=hidden, heads=hidden // head_dim, depth_double=_count_blocks(video, "double_blocks."),
                           depth_single=_count_blocks(video, "single_blocks."), mlp_ratio=mlp_hidden / hidden,
                           in_channels=in_ch, context_dim=context_dim, axes_dim=tuple(axes_dim), theta=float(theta),
                           guidance_embed=any(k.startswith("guidance_in.") for k in video))
    a_hidden, action_dim = _shape(action, "action_encoder.weight", where)
    a_head_dim = _shape(action, "double_blocks.0.img_attn.norm.query_norm.scale", where)[0]
    attn_dim = _shape(action, "double_blocks.0.img_attn.qkv.weight", where)[0] // 3
    a_mlp = _shape(action, "double_blocks.0.img_mlp.2.weight", where)[1]
    expert = ActionExpertConfig(action_dim=action_dim, hidden=a_hidden, heads=attn_dim // a_head_dim, head_dim=a_head_dim,
                                depth_double=_count_blocks(action, "double_blocks."),
                                depth_single=_count_blocks(action, "single_blocks."), mlp_ratio=a_mlp / a_hidden)
    p_out, proprio_dim = tuple(proprio["weight"].shape)
    if p_out != context_dim:
        raise CheckpointError(f"{where}: proprio_encoder maps to {p_out} but the backbone's text width is {context_dim}")
    return backbone, expert, proprio_dim


def split_mot(mot: dict, where: str) -> tuple[dict, dict, list[str]]:
    """-> (video, action, unexpected). Alias keys of the backbone are dropped after a shape check."""
    video, action, aliases, unexpected = {}, {}, {}, []
    for key, tensor in mot.items():
        if key.startswith(VIDEO):
            video[key[len(VIDEO):]] = tensor
        elif key.startswith(VIDEO_ALIASES):
            aliases[key[len("mixtures.video."):]] = tensor
        elif key.startswith(ACTION):
            action[key[len(ACTION):]] = tensor
        else:
            unexpected.append(key)
    for key, tensor in aliases.items():
        if key not in video:  # an export that kept only the alias: use it
            video[key] = tensor
        elif tuple(video[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{where}: alias mixtures.video.{key} {tuple(tensor.shape)} disagrees with "
                                  f"{VIDEO}{key} {tuple(video[key].shape)}; the checkpoint is inconsistent")
    return video, action, unexpected


def _cross_check(train_config: dict, backbone: Flux2Config, expert: ActionExpertConfig, proprio_dim: int, where: str):
    """Compare the inferred architecture with the training config where it states it."""
    model_cfg = train_config.get("model", train_config) if isinstance(train_config, dict) else {}
    act = model_cfg.get("action_dit_config", {}) if isinstance(model_cfg, dict) else {}
    checks = [("model.action_dit_config.action_dim", act.get("action_dim"), expert.action_dim),
              ("model.action_dit_config.hidden_dim", act.get("hidden_dim"), expert.hidden),
              ("model.action_dit_config.num_heads", act.get("num_heads"), expert.heads),
              ("model.action_dit_config.num_layers_double", act.get("num_layers_double"), expert.depth_double),
              ("model.action_dit_config.num_layers_single", act.get("num_layers_single"), expert.depth_single),
              ("model.action_dit_config.mlp_ratio", act.get("mlp_ratio"), expert.mlp_ratio),
              ("model.proprio_dim", model_cfg.get("proprio_dim") if isinstance(model_cfg, dict) else None, proprio_dim)]
    for name, stated, found in checks:
        if isinstance(stated, (int, float)) and not isinstance(stated, bool) and float(stated) != float(found):
            raise CheckpointError(f"{where}: train_config.yaml says {name} = {stated} but model.pt has {found}; "
                                  "the config and weights come from different runs")


def load_state(path: Path) -> dict:
    if not path.exists():
        found = sorted(p.name for p in path.parent.iterdir()) if path.parent.is_dir() else []
        raise CheckpointError(f"{path} not found (directory holds: {found or 'nothing'}); an ImageWAM release "
                              "directory has model.pt, dataset_stats.json and train_config.yaml")
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # zip/pickle errors come in many types
        raise CheckpointError(f"{path} is not a loadable torch checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); it must be the `model.pt` saved by "
                              "ImageWAM training (a dict with 'mot' and 'proprio_encoder')") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("mot"), dict):
        raise CheckpointError(f"{path}: expected a dict with a 'mot' state dict, got "
                              f"{type(payload).__name__} with keys {list(payload)[:8] if isinstance(payload, dict) else ''}")
    proprio = payload.get("proprio_encoder")
    if not isinstance(proprio, dict) or set(proprio) != {"weight", "bias"}:
        raise CheckpointError(f"{path}: 'proprio_encoder' must be {{'weight', 'bias'}}, got "
                              f"{sorted(proprio) if isinstance(proprio, dict) else type(proprio).__name__}; "
                              "this package supports checkpoints trained with proprio packed after the text")
    if any("lora" in k for k in payload["mot"]):
        raise CheckpointError(f"{path}: the 'mot' state dict holds LoRA tensors; merge them into the base weights "
                              "before export (save with checkpoint_format='full')")
    return payload


def open_release(directory: str | Path) -> tuple[Path, str, dict, dict]:
    """A release directory's (directory, "DIR/model.pt", the model.pt payload memory-mapped, train_config) with
    model.pt and dataset_stats.json checked present (every variant's loader starts here)."""
    from ..train_config import load_train_config

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    where = str(directory / "model.pt")
    payload = load_state(directory / "model.pt")
    if not (directory / "dataset_stats.json").exists():
        raise CheckpointError(f"{directory}/dataset_stats.json is missing: copy it from the training run "
                              "(actions cannot be un-normalised without it)")
    return directory, where, payload, load_train_config(directory)


def load_checkpoint(directory: str | Path, dtype: torch.dtype | None = None, axes_dim=None) -> ImageWAMCheckpoint:
    directory, where, payload, train_config = open_release(directory)
    stored = parse_dtype(payload.get("torch_dtype", "float32"))

    video, action, unexpected = split_mot(payload["mot"], where)
    extra = train_config.get("edge", {}) if isinstance(train_config, dict) else {}
    backbone_cfg, expert_cfg, proprio_dim = infer_configs(video, action, payload["proprio_encoder"], where,
                                                          axes_dim or extra.get("axes_dim"), extra.get("theta", 2000.0))
    _cross_check(train_config, backbone_cfg, expert_cfg, proprio_dim, str(directory / "train_config.yaml"))
    with torch.device("meta"):
        model = ImageWAMFlux2(backbone_cfg, expert_cfg, proprio_dim)
    state = {**{"backbone." + k: v for k, v in video.items()}, **{"expert." + k: v for k, v in action.items()},
             **{"proprio_encoder." + k: v for k, v in payload["proprio_encoder"].items()}}
    prefix_of = {"backbone.": VIDEO, "expert.": ACTION, "proprio_encoder.": "proprio_encoder."}

    def official(name: str) -> str:
        head = next(p for p in prefix_of if name.startswith(p))
        return prefix_of[head] + name[len(head):]

    target = dtype or stored
    strict_assign(model, state, where, f"ImageWAM FLUX.2 layout inferred from its shapes (backbone "
                  f"{backbone_cfg.depth_double}+{backbone_cfg.depth_single} blocks, hidden {backbone_cfg.hidden}; "
                  f"expert hidden {expert_cfg.hidden})", official, target)
    log.info("loaded %s: step %s, %s, backbone %d+%d x %d, expert %d", where, payload.get("step"), target,
             backbone_cfg.depth_double, backbone_cfg.depth_single, backbone_cfg.hidden, expert_cfg.hidden)
    return ImageWAMCheckpoint(directory, model, int(payload.get("step", 0) or 0), target, train_config)


def strict_assign(module: torch.nn.Module, state: dict, where: str, what: str, name_of=lambda k: k, dtype=None):
    """Assign `state` to a meta-built `module` (no copy; cast only to another `dtype`); refuse, naming the keys,
    unless the keys and shapes match exactly."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = [name_of(k) for k in expected if k not in state]
    unexpected = [name_of(k) for k in state if k not in expected]
    wrong = [f"{name_of(k)} {tuple(state[k].shape)} (expected {expected[k]})"
             for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    problems = [f"{len(n)} {t}: " + ", ".join(n[:6]) + (" ..." if len(n) > 6 else "")
                for t, n in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if n]
    if problems:
        raise CheckpointError(f"{where} does not match the {what}: " + "; ".join(problems))
    state = {k: (v if dtype is None or v.dtype == dtype else v.to(dtype)) for k, v in state.items()}
    module.load_state_dict(state, strict=True, assign=True)
    return module.eval().requires_grad_(False)


def official_state_dict(model) -> dict:
    """The `model.pt` payload layout of an ImageWAM model with `backbone`, `expert` and `proprio_encoder`
    (the backbone's alias keys share storage with the canonical ones, as nn.Module aliasing produces)."""
    mot = {}
    for k, v in model.backbone.state_dict().items():
        mot[VIDEO + k] = v
        if k.startswith(("double_blocks.", "single_blocks.")):
            mot["mixtures.video." + k] = v
    for k, v in model.expert.state_dict().items():
        mot[ACTION + k] = v
    return {"mot": mot, "proprio_encoder": dict(model.proprio_encoder.state_dict())}
