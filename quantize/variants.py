"""The torch side of the model variants: each variant's record (edge/model_variants.py, the one registry) names its
demo writer, policy loader and export components as "module:function" strings; they are imported here, when called.
Export, quantization, the runtime and the benchmark go through these functions, so every variant is treated alike."""
from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

from edge.errors import CheckpointError, ConfigError, MissingDependencyError
from edge.model_variants import detect, find_size, get_variant, size_names

REAL_SIZE_OPTIONS = ("double_blocks", "single_blocks", "full_text_encoder", "progress")  # real-size demos only


def _resolve(ref: str):
    module, fn = ref.split(":")
    try:
        return getattr(importlib.import_module(module), fn)
    except AttributeError:
        raise ConfigError(f"{ref}: module {module} has no {fn}; fix the model variant's record "
                          "(edge/model_variants.py)") from None


def detect_variant(checkpoint: str | Path) -> str:
    """From train_config.yaml (`edge.variant`, else its model section) if it tells, else from the tensor names in
    model.pt (the pickle only: the weights are read once, by the loader)."""
    from .train_config import load_train_config

    directory = Path(checkpoint)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    has_config = (directory / "train_config.yaml").exists()
    return detect(directory, load_train_config(directory) if has_config else {}).name


def write_demo(name: str, out, **kwargs):
    """A demo checkpoint of a registered size (`demo-checkpoint --variant`)."""
    _, size = find_size(name)
    real_only = sorted(k for k, v in kwargs.items() if k in REAL_SIZE_OPTIONS and v not in (None, False))
    if real_only and not size.real_size:
        raise CheckpointError(f"{', '.join(real_only)} only apply to the real-size demos "
                              f"{size_names(real_size=True)}, not {name!r}")
    kwargs = {k: v for k, v in kwargs.items() if size.real_size or k not in REAL_SIZE_OPTIONS}
    return _resolve(size.demo_writer)(out, variant=name, **kwargs)


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
    variant = get_variant(detect_variant(checkpoint))
    loader = _resolve(variant.policy_loader)
    device = check_torch_device(device)
    params = inspect.signature(loader).parameters
    for name, value, default in (("device", device, "cpu"), ("compile", compile, False)):
        if value != default:
            if name not in params:
                raise ConfigError(f"{checkpoint}: the {variant.name} torch backend runs on the CPU "
                                  f"only (no {name}={value!r}); drop --device/--compile, or export the checkpoint "
                                  "and run the engines (`imagewam-edge export`)")
            kwargs[name] = value
    return loader(checkpoint, **kwargs)



def load_source(source):
    """The LoadedPolicy a checkpoint `edge.policy_source.PolicySource` describes (base, dtype, prompt cache, steps,
    canvas, device, compile): the one way export, verify and the CLI's loader assemble a checkpoint."""
    from edge.policy_source import PolicySource

    from .model.checkpoint import DTYPES as TORCH_DTYPES

    if not isinstance(source, PolicySource) or not source.checkpoint:
        raise ConfigError(f"load_source takes a PolicySource with a checkpoint, got {source!r}")
    kwargs = {"base": source.base, "prompt_cache": source.prompt_cache, "canvas": source.canvas,
              "dtype": None if source.dtype == "auto" else TORCH_DTYPES[source.dtype],
              "steps": None if source.steps is None else int(source.steps)}
    return load_policy(source.checkpoint, device=source.device, compile=source.compile,
                       **{k: v for k, v in kwargs.items() if v is not None})

def text_encoder_components(variant: str, loaded) -> dict:
    """The variant's optional text encoder engine alone (exported first, so its weights can go before the rest)."""
    ref = get_variant(variant).text_encoder_component
    if ref is None:
        raise CheckpointError(f"variant {variant!r} has no separate text encoder engine (its conditioning reads "
                              "the image every step and is part of vision_encoder)")
    return _resolve(ref)(loaded)


def export_components(variant: str, loaded, text_encoder: bool = False) -> dict:
    """The variant's engines; `text_encoder=True` adds the off-control-path text encoder where the variant has one."""
    components = _resolve(get_variant(variant).export_components)(loaded)
    return {**components, **text_encoder_components(variant, loaded)} if text_encoder else components
