"""Model variants on the torch side: which demo checkpoints exist and which loader assembles a policy from a
release directory. Export, quantization, the runtime and the benchmark go through this registry, so every variant
is treated alike. A variant adds: a demo writer, a policy loader and a detector for its checkpoints."""
from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

from edge.errors import CheckpointError, ConfigError, MissingDependencyError

# demo name -> (writer "module:function", variant)
DEMO_VARIANTS = {"flux2-tiny": ("quantize.demo:write_demo_checkpoint", "flux2"),
                 "flux2-4b": ("quantize.demo_real:write_real_demo", "flux2"),
                 "flux2-9b": ("quantize.demo_real:write_real_demo", "flux2"),
                 "ovis-u1-tiny": ("quantize.model.ovis_u1.demo:write_demo_checkpoint", "ovis-u1"),
                 "ovis-u1": ("quantize.model.ovis_u1.demo_real:write_real_ovis_demo", "ovis-u1")}
REAL_SIZE_DEMOS = ("flux2-4b", "flux2-9b", "ovis-u1")  # take double_blocks=, single_blocks=, full_text_encoder=, progress=
# variant -> policy loader "module:function" with signature (checkpoint, base=, dtype=, prompt_cache=, steps=, ...)
POLICY_LOADERS = {"flux2": "quantize.torch_backend:load_torch_policy",
                  "ovis-u1": "quantize.model.ovis_u1.backend:load_ovis_policy"}
# variant -> "module:function" (loaded_policy) -> dict[str, ExportComponent]
TEXT_ENCODER_COMPONENTS = {"flux2": "quantize.model.export_flux2:text_encoder_component"}
EXPORT_COMPONENTS = {"flux2": "quantize.model.export_flux2:flux2_components",
                     "ovis-u1": "quantize.model.ovis_u1.export:ovis_components"}


def _resolve(ref: str):
    module, fn = ref.split(":")
    return getattr(importlib.import_module(module), fn)


def detect_variant(checkpoint: str | Path) -> str:
    """From train_config.yaml (`edge.variant`) if stated, else from the tensor names in model.pt."""
    from .train_config import load_train_config

    directory = Path(checkpoint)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    cfg_path = directory / "train_config.yaml"
    if cfg_path.exists():
        cfg = load_train_config(directory)
        stated = (cfg.get("edge") or {}).get("variant")
        if stated:
            if stated not in POLICY_LOADERS:
                raise CheckpointError(f"{cfg_path}: edge.variant {stated!r} is not one of {sorted(POLICY_LOADERS)}")
            return stated
        model_variant = str((cfg.get("model") or {}).get("variant", ""))
        if model_variant.startswith("klein"):
            return "flux2"
        if str((cfg.get("model") or {}).get("stack", "")) == "ovis_u1":
            return "ovis-u1"
    from edge.checkpoint_keys import state_shapes

    keys = state_shapes(directory / "model.pt").keys()  # the pickle only: no tensor is read here
    if any(k.startswith("mixtures.video.transformer.double_stream_modulation_img") for k in keys):
        return "flux2"
    if any(k.startswith("mixtures.video.transformer.txt_in.individual_token_refiner.") for k in keys):
        return "ovis-u1"  # the Yak token refiner exists only in Ovis-U1
    raise CheckpointError(f"{directory}: cannot tell the model variant from model.pt; set `edge: {{variant: ...}}` "
                          f"in train_config.yaml (one of {sorted(POLICY_LOADERS)})")


def write_demo(name: str, out, **kwargs):
    if name not in DEMO_VARIANTS:
        raise CheckpointError(f"unknown demo variant {name!r}; choose one of {sorted(DEMO_VARIANTS)}")
    real_only = sorted(k for k, v in kwargs.items() if k in ("double_blocks", "single_blocks", "full_text_encoder",
                                                                "progress") and v not in (None, False))
    if real_only and name not in REAL_SIZE_DEMOS:
        raise CheckpointError(f"{', '.join(real_only)} only apply to the real-size demos {list(REAL_SIZE_DEMOS)}, "
                              f"not {name!r}")
    kwargs = {k: v for k, v in kwargs.items() if name in REAL_SIZE_DEMOS or k not in
              ("double_blocks", "single_blocks", "full_text_encoder", "progress")}
    return _resolve(DEMO_VARIANTS[name][0])(out, variant=name, **kwargs)


def check_torch_device(device: str) -> str:
    """"cpu", "cuda" or "cuda:N", refused with the fix when this torch cannot run there."""
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:[0-9]+)?", device):
        raise ConfigError(f"torch device {device!r}: use cpu, cuda or cuda:N (e.g. --device cuda)")
    if device == "cpu":
        return device
    import torch

    if torch.version.cuda is None:
        raise MissingDependencyError(
            f"--device {device}: this torch ({torch.__version__}) is a CPU-only build; install a CUDA build "
            "(pip install torch --index-url https://download.pytorch.org/whl/cu126; on a Jetson NVIDIA's PyTorch "
            "wheels for your JetPack) or run with --device cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"--device {device}: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU; check `nvidia-smi` "
            "and the driver, in a container start it with the NVIDIA runtime (docker run --gpus all, or --runtime "
            "nvidia on a Jetson), or run with --device cpu")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: torch sees {torch.cuda.device_count()} GPU(s) (cuda:0 .. "
                          f"cuda:{torch.cuda.device_count() - 1}); pick one of those")
    return device


def load_policy(checkpoint, device: str = "cpu", compile: bool = False, **kwargs):
    """Detect the variant and assemble a torch policy (returns the loader's LoadedPolicy). `device` "cuda"/"cuda:N"
    and `compile` (torch.compile inside the CUDA graphs) go to loaders that take them; CUDA is checked first."""
    loader = _resolve(POLICY_LOADERS[detect_variant(checkpoint)])
    device = check_torch_device(device)
    params = inspect.signature(loader).parameters
    for name, value, default in (("device", device, "cpu"), ("compile", compile, False)):
        if value != default:
            if name not in params:
                raise ConfigError(f"{checkpoint}: the {detect_variant(checkpoint)} torch backend runs on the CPU "
                                  f"only (no {name}={value!r}); drop --device/--compile, or export the checkpoint "
                                  "and run the engines (`imagewam-edge export`)")
            kwargs[name] = value
    return loader(checkpoint, **kwargs)


def text_encoder_components(variant: str, loaded) -> dict:
    """The variant's optional text encoder engine alone (exported first, so its weights can go before the rest)."""
    if variant not in TEXT_ENCODER_COMPONENTS:
        raise CheckpointError(f"variant {variant!r} has no separate text encoder engine (its conditioning reads "
                              "the image every step and is part of vision_encoder)")
    return _resolve(TEXT_ENCODER_COMPONENTS[variant])(loaded)


def export_components(variant: str, loaded, text_encoder: bool = False) -> dict:
    """The variant's engines; `text_encoder=True` adds the off-control-path text encoder where the variant has one."""
    if variant not in EXPORT_COMPONENTS:
        raise CheckpointError(f"no exporter for variant {variant!r}; known: {sorted(EXPORT_COMPONENTS)}")
    if text_encoder:
        if variant not in TEXT_ENCODER_COMPONENTS:
            raise CheckpointError(f"variant {variant!r} has no separate text encoder engine (its conditioning reads "
                                  "the image every step and is part of vision_encoder)")
        return {**_resolve(EXPORT_COMPONENTS[variant])(loaded), **_resolve(TEXT_ENCODER_COMPONENTS[variant])(loaded)}
    return _resolve(EXPORT_COMPONENTS[variant])(loaded)
