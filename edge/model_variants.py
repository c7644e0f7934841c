"""The model variants, one record each, registered once: everything that differs between FLUX.2 klein and Ovis-U1
(and, later, OmniGen2) and nothing else. Every consumer reads this registry: the runtime's prefix stage, the engine
list, variant detection (train_config.yaml, then the checkpoint's tensor names), demo checkpoints, the torch policy
loader, export, the roofline (`bench --model-only`) and the CLI's `--variant` choices.

No torch here (the core, docs/architecture.md): the torch side is named by "module:function" strings that
quantize/variants.py imports only when it calls them.

To add a variant (e.g. OmniGen2): write its prefix-stage class (edge/prefix_stages.py), its configuration records
(edge/model_configs.py) and roofline cost function (edge/roofline_costs.py), its torch side in quantize/ (demo
writer, policy loader, export components), then add one `register(ModelVariant(...))` at the end of this file."""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from .checkpoint_keys import state_shapes
from .errors import CheckpointError, ConfigError
from .model_configs import FLUX2_PRESETS, FLUX2_VAE, OVIS_U1_3B, TEXT_ENCODERS
from .prefix_stages import Flux2Prefix, OvisU1Prefix, PrefixStage
from .roofline_costs import flux2_costs, ovis_u1_costs

_NAME = re.compile(r"[a-z0-9][a-z0-9.-]*")
_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def _check_ref(owner: str, what: str, ref) -> None:
    if not (isinstance(ref, str) and _REF.fullmatch(ref)):
        raise ConfigError(f"model variant {owner!r}: {what} must be a 'module:function' string, got {ref!r}")


@dataclass(frozen=True)
class ModelSize:
    """One size of a variant: a `demo-checkpoint --variant` name and, for a published size, a `bench --model-only
    --variant` name."""

    name: str  # e.g. "flux2-4b"
    demo_writer: str  # "module:function" (out, variant=name, embodiment=, seed=, ...) -> the checkpoint directory
    config: Mapping[str, object] = field(default_factory=dict, hash=False)  # the configuration records of this size
    # (edge/model_configs.py) by role ("backbone", "text_encoder", "vae", ...); what the roofline and writers read
    real_size: bool = False  # a published size: roofline figures, and the demo takes double_blocks=, single_blocks=,
    # full_text_encoder=, progress= (a real-width slice with a stand-in text encoder)

    def __post_init__(self):
        if not (isinstance(self.name, str) and _NAME.fullmatch(self.name)):
            raise ConfigError(f"model size name {self.name!r}: lower-case letters, digits, '-' and '.' only")
        _check_ref(self.name, "demo_writer", self.demo_writer)
        if not isinstance(self.config, Mapping):
            raise ConfigError(f"model size {self.name!r}: config must be a mapping of records, got "
                              f"{type(self.config).__name__}")
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))


@dataclass(frozen=True)
class ModelVariant:
    """What a model variant is, on every side of the house."""

    name: str  # PolicySpec.variant, policy.json, manifests and train_config.yaml `edge.variant`
    sizes: tuple[ModelSize, ...]
    prefix_stage: type  # an edge/prefix_stages.py PrefixStage: `components`, `text_kind`, (spec, canvas) -> stage
    roofline: Callable  # (config, precision, text_tokens, canvas, steps, video=None) -> [Cost] (edge/roofline_costs.py)
    policy_loader: str  # "module:function" (checkpoint, base=, dtype=, prompt_cache=, steps=, ...) -> LoadedPolicy
    export_components: str  # "module:function" (loaded policy) -> {name: ExportComponent}
    text_encoder_component: str | None = None  # "module:function" (loaded) -> {"text_encoder": ...}; None: the
    # conditioning reads the image every step and is part of vision_encoder
    train_config: tuple[tuple[str, str], ...] = ()  # (dotted field, glob): an official train_config.yaml of this
    # variant has one of these (e.g. ("model.variant", "klein*"))
    key_prefixes: tuple[str, ...] = ()  # tensor-name prefixes in model.pt that only this variant has

    def __post_init__(self):
        if not (isinstance(self.name, str) and _NAME.fullmatch(self.name)):
            raise ConfigError(f"model variant name {self.name!r}: lower-case letters, digits, '-' and '.' only")
        if not (isinstance(self.sizes, tuple) and self.sizes and all(isinstance(s, ModelSize) for s in self.sizes)):
            raise ConfigError(f"model variant {self.name!r}: sizes must be a non-empty tuple of ModelSize")
        if len({s.name for s in self.sizes}) != len(self.sizes):
            raise ConfigError(f"model variant {self.name!r}: size names repeat: {[s.name for s in self.sizes]}")
        if not (isinstance(self.prefix_stage, type) and issubclass(self.prefix_stage, PrefixStage)
                and isinstance(getattr(self.prefix_stage, "text_kind", None), str)):
            raise ConfigError(f"model variant {self.name!r}: prefix_stage {self.prefix_stage!r} must be a PrefixStage "
                              "subclass with a text_kind (edge/prefix_stages.py)")
        if not callable(self.roofline):
            raise ConfigError(f"model variant {self.name!r}: roofline must be a cost function (edge/roofline_costs.py)")
        _check_ref(self.name, "policy_loader", self.policy_loader)
        _check_ref(self.name, "export_components", self.export_components)
        if self.text_encoder_component is not None:
            _check_ref(self.name, "text_encoder_component", self.text_encoder_component)
        if not (isinstance(self.train_config, tuple) and all(
                isinstance(p, tuple) and len(p) == 2 and all(isinstance(x, str) and x for x in p)
                for p in self.train_config)):
            raise ConfigError(f"model variant {self.name!r}: train_config must be a tuple of (field, pattern) pairs")
        if not (isinstance(self.key_prefixes, tuple) and all(isinstance(k, str) and k for k in self.key_prefixes)):
            raise ConfigError(f"model variant {self.name!r}: key_prefixes must be a tuple of non-empty strings")

    @property
    def components(self) -> tuple[str, ...]:
        """The engines a policy of this variant runs, in order."""
        return (*self.prefix_stage.components, "denoise_step")

    @property
    def text_kind(self) -> str:
        """What its prompt cache holds: "embedding" (float [T, width]) or "token_ids" (int [T])."""
        return self.prefix_stage.text_kind

    def recognises(self, train_config: dict) -> bool:
        """Whether an official train_config.yaml (no `edge.variant`) is of this variant."""
        for dotted, pattern in self.train_config:
            value = train_config
            for key in dotted.split("."):
                value = value.get(key) if isinstance(value, dict) else None
            if value is not None and fnmatch.fnmatchcase(str(value), pattern):
                return True
        return False

    def owns_keys(self, keys: Iterable[str]) -> bool:
        return any(k.startswith(self.key_prefixes) for k in keys)


_REGISTRY: dict[str, ModelVariant] = {}


def register(variant: ModelVariant) -> ModelVariant:
    """Add a variant; its name and its size names must be new."""
    if not isinstance(variant, ModelVariant):
        raise ConfigError(f"register() takes a ModelVariant, got {type(variant).__name__}")
    if variant.name in _REGISTRY:
        raise ConfigError(f"model variant {variant.name!r} is already registered")
    taken = sorted({s.name for s in variant.sizes} & set(size_names()))
    if taken:
        raise ConfigError(f"model variant {variant.name!r}: size name(s) {taken} already belong to another variant")
    _REGISTRY[variant.name] = variant
    return variant


def unregister(name: str) -> None:
    """Remove a variant registered at run time (a plug-in, a test)."""
    get_variant(name)
    del _REGISTRY[name]


def variants() -> tuple[ModelVariant, ...]:
    return tuple(_REGISTRY.values())


def variant_names() -> list[str]:
    return sorted(_REGISTRY)


def get_variant(name: str) -> ModelVariant:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown model variant {name!r}; known: {variant_names()}") from None


def size_names(real_size: bool | None = None) -> list[str]:
    """Every size name, sorted (the `demo-checkpoint --variant` choices); real_size=True: the published ones only."""
    return sorted(s.name for v in _REGISTRY.values() for s in v.sizes if real_size is None or s.real_size == real_size)


def roofline_names() -> tuple[str, ...]:
    """The sizes with roofline figures (`bench --model-only --variant`), in registration order."""
    return tuple(s.name for v in _REGISTRY.values() for s in v.sizes if s.real_size)


def find_size(name: str) -> tuple[ModelVariant, ModelSize]:
    """(variant, size) of a size name such as "flux2-4b" or "ovis-u1-tiny"."""
    for v in _REGISTRY.values():
        for s in v.sizes:
            if s.name == name:
                return v, s
    raise ConfigError(f"unknown model size {name!r}; known: {size_names()}")


def demo_size(name: str, writer: str) -> tuple[ModelVariant, ModelSize]:
    """(variant, size) of a size whose record names `writer` ("module:function") as its demo writer: how a writer
    checks the name it is asked for."""
    found = find_size(name)
    if found[1].demo_writer != writer:
        mine = sorted(s.name for v in _REGISTRY.values() for s in v.sizes if s.demo_writer == writer)
        raise ConfigError(f"demo size {name!r} is not written by {writer} (it writes {mine}); write it with "
                          f"`imagewam-edge demo-checkpoint --variant {name}`")
    return found


def prefix_stage(spec, canvas):
    """The runtime prefix stage of `spec.variant` (PolicySpec) on a canvas."""
    return get_variant(spec.variant).prefix_stage(spec, canvas)


def _one(found: list[ModelVariant], where: str, how: str) -> ModelVariant | None:
    if len(found) > 1:
        raise CheckpointError(f"{where}: {how} fits several model variants {[v.name for v in found]}; set "
                              "`edge: {variant: ...}` in train_config.yaml to choose")
    return found[0] if found else None


def variant_from_train_config(train_config: dict, where: str = "train_config.yaml") -> ModelVariant | None:
    """`edge.variant` if stated, else the variant whose recognisers the official fields match; None: not told."""
    stated = (train_config.get("edge") or {}).get("variant")
    if stated:
        if stated not in _REGISTRY:
            raise CheckpointError(f"{where}: edge.variant {stated!r} is not one of {variant_names()}")
        return _REGISTRY[stated]
    return _one([v for v in _REGISTRY.values() if v.recognises(train_config)], where, "its model section")


def variant_from_keys(keys: Iterable[str], where: str = "model.pt") -> ModelVariant:
    """The variant whose tensor-name prefixes occur in `keys`."""
    keys = list(keys)
    found = _one([v for v in _REGISTRY.values() if v.owns_keys(keys)], where, "its tensor names")
    if found is None:
        raise CheckpointError(f"{where}: cannot tell the model variant from its tensor names; set "
                              f"`edge: {{variant: ...}}` in train_config.yaml (one of {variant_names()})")
    return found


def detect(directory: str | Path, train_config: dict) -> ModelVariant:
    """A checkpoint's variant: from its train_config.yaml ({} when it has none), else from the tensor names of its
    model.pt, read from the pickle alone (edge/checkpoint_keys.py: no tensor is loaded, so the loader that follows
    reads the weights once)."""
    directory = Path(directory)
    found = variant_from_train_config(train_config, str(directory / "train_config.yaml"))
    if found is None:
        found = variant_from_keys(state_shapes(directory / "model.pt").keys(), f"{directory}/model.pt")
    return found


# --- the registered variants ------------------------------------------------------------------------------------
def _flux2_size(name: str) -> ModelSize:
    return ModelSize(name, "quantize.demo_real:write_real_demo", real_size=True,
                     config={"backbone": FLUX2_PRESETS[name], "text_encoder": TEXT_ENCODERS[name], "vae": FLUX2_VAE})


FLUX2 = register(ModelVariant(
    name="flux2",
    sizes=(ModelSize("flux2-tiny", "quantize.demo:write_demo_checkpoint", {"backbone": FLUX2_PRESETS["flux2-tiny"]}),
           _flux2_size("flux2-4b"), _flux2_size("flux2-9b")),
    prefix_stage=Flux2Prefix,
    roofline=flux2_costs,
    policy_loader="quantize.torch_backend:load_torch_policy",
    export_components="quantize.model.export_flux2:flux2_components",
    text_encoder_component="quantize.model.export_flux2:text_encoder_component",
    train_config=(("model.variant", "klein*"),),
    key_prefixes=("mixtures.video.transformer.double_stream_modulation_img",),
))

OVIS_U1 = register(ModelVariant(
    name="ovis-u1",
    sizes=(ModelSize("ovis-u1-tiny", "quantize.model.ovis_u1.demo:write_demo_checkpoint"),  # records in the writer
           ModelSize("ovis-u1", "quantize.model.ovis_u1.demo_real:write_real_ovis_demo", OVIS_U1_3B, real_size=True)),
    prefix_stage=OvisU1Prefix,
    roofline=ovis_u1_costs,
    policy_loader="quantize.model.ovis_u1.backend:load_ovis_policy",
    export_components="quantize.model.ovis_u1.export:ovis_components",
    train_config=(("model.stack", "ovis_u1"),),
    key_prefixes=("mixtures.video.transformer.txt_in.individual_token_refiner.",),  # the Yak token refiner
))
