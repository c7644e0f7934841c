"""Loading a policy from an engines directory (ONNX or TensorRT) without torch: policy.json, dataset_stats.json,
the prompt cache and the components through the chosen backend."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from .errors import ConfigError
from .model_variants import get_variant
from .normalize import load_normalizers
from .policy import ImageWAMPolicy, PolicySpec
from .prompt_cache import PromptCache, TextSource
from .transforms import get_embodiment

log = logging.getLogger(__name__)


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: {what}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}): {what}") from None


def read_spec(engines: Path) -> PolicySpec:
    return PolicySpec.from_dict(read_json(engines / "policy.json", "an engines directory is written by "
                                          "`imagewam-edge export` (or quantize/build)"), str(engines / "policy.json"))


def load_engine_policy(engines: str | Path, backend: str = "onnxruntime", prompt_cache: str | Path | None = None,
                       steps: int | None = None, providers: list[str] | None = None, threads: int = 0) -> ImageWAMPolicy:
    engines = Path(engines)
    if not engines.is_dir():
        raise ConfigError(f"engines directory {engines} does not exist; create it with `imagewam-edge export`")
    spec = read_spec(engines)
    if steps and steps != spec.steps:
        spec = PolicySpec.from_dict({**spec.to_dict(), "steps": int(steps)})
    components = engine_components(spec)
    if backend == "onnxruntime":
        from .backends.onnxrt import OnnxRuntimeBackend

        impl = OnnxRuntimeBackend(engines, components, providers=providers, threads=threads)
    elif backend == "tensorrt":
        from .backends.tensorrt import TensorRTBackend

        impl = TensorRTBackend(engines, components)
    else:
        raise ConfigError(f"unknown backend {backend!r}: onnxruntime or tensorrt")
    return policy_over(engines, spec, impl, prompt_cache)


def engine_components(spec: PolicySpec) -> list[str]:
    """The components a policy of this variant runs, in order."""
    return list(get_variant(spec.variant).components)


def policy_over(engines: Path, spec: PolicySpec, impl, prompt_cache: str | Path | None = None) -> ImageWAMPolicy:
    """The policy of an engines directory over an already made backend (normalisation and prompt cache from it)."""
    state_norm, action_norm = load_normalizers(engines / "dataset_stats.json", get_embodiment(spec.embodiment).norm_mode)
    cache = PromptCache(prompt_cache or engines / "prompts.npz")
    return ImageWAMPolicy(impl, spec, TextSource(spec.text_encoder, cache, encoder=None), state_norm, action_norm)
