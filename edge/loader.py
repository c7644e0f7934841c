"""One way to get a policy (CLI layer, docs/architecture.md): a `PolicySource` record says where the policy comes
from and how it runs; `load_policy` assembles it. `run`, `infer`, `eval`, `bench`, `bench --compare` and `verify`
all go through here, so a checkpoint loads the same way (base, dtype, prompt cache, steps, canvas, device) whichever
command asks.

  engines DIR  -> onnxruntime (default) or tensorrt, torch-free (edge/engines.py); "@default": the embedded default
  checkpoint   -> the torch backend of the checkpoint's variant (quantize/variants.py; workstation or a GPU)"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .errors import ConfigError

BACKENDS = ("onnxruntime", "tensorrt", "torch")
DTYPES = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class PolicySource:
    engines: str | None = None  # engines directory, or "@default"
    checkpoint: str | None = None  # ImageWAM release directory (torch backend)
    backend: str = ""  # "" = torch for a checkpoint, onnxruntime for engines
    base: str | None = None  # base release; default CHECKPOINT/base. FLUX.2: vae/ always, text_encoder/ and
    #                          tokenizer/ only for instructions not in a prompt cache (Ovis-U1: REQUIRED_BASE)
    dtype: str = "auto"  # torch compute dtype; auto = the checkpoint's own
    prompt_cache: str | None = None  # engines: default ENGINES/prompts.npz; checkpoint: read before CHECKPOINT/prompts.npz
    steps: int | None = None  # denoising steps; None = the engines' / 10
    canvas: str | None = None
    device: str = "cpu"  # torch: cpu | cuda | cuda:N
    compile: bool = False  # torch: torch.compile inside the CUDA graphs
    threads: int = 0  # onnxruntime intra-op threads (0 = its default)

    def __post_init__(self):
        if bool(self.engines) == bool(self.checkpoint):
            raise ConfigError("a policy comes from exactly one of --engines DIR (exported engines) or --checkpoint DIR "
                              f"(an ImageWAM release); got engines={self.engines!r}, checkpoint={self.checkpoint!r}")
        backend = self.resolved_backend
        if backend not in BACKENDS:
            raise ConfigError(f"--backend {backend!r}: choose one of {list(BACKENDS)}")
        if self.checkpoint and backend != "torch":
            raise ConfigError(f"--backend {backend} runs exported engines: pass --engines DIR (make them with "
                              "`imagewam-edge export --checkpoint DIR --out engines/fp32`)")
        if self.engines and backend == "torch":
            raise ConfigError("--backend torch runs a checkpoint: pass --checkpoint DIR (or drop --backend to run "
                              "the engines with onnxruntime)")
        if backend != "torch" and (self.device != "cpu" or self.compile):
            raise ConfigError(f"--device/--compile apply to the torch backend (--checkpoint DIR); --backend {backend} "
                              "runs its engines where they were built: drop --device/--compile")
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype {self.dtype!r}: choose one of {list(DTYPES)}")
        if self.steps is not None and int(self.steps) < 1:
            raise ConfigError(f"--steps must be >= 1, got {self.steps}")

    @property
    def resolved_backend(self) -> str:
        return self.backend or ("torch" if self.checkpoint else "onnxruntime")


def load_policy(source: PolicySource, progress: Callable[[str], None] = lambda s: None):
    """The policy (edge.policy.ImageWAMPolicy) the source describes."""
    if source.engines:
        from .engines import load_engine_policy

        engines = source.engines
        if engines == "@default":
            from .default import ensure_default_engines

            engines = str(ensure_default_engines(progress=progress))
        elif engines.startswith("@"):
            raise ConfigError(f"engines {engines!r}: the only special value is @default (the embedded default)")
        return load_engine_policy(engines, backend=source.resolved_backend, prompt_cache=source.prompt_cache,
                                  steps=source.steps, threads=source.threads)
    return load_checkpoint_policy(source).policy


def load_checkpoint_policy(source: PolicySource):
    """The torch side's LoadedPolicy (policy + checkpoint + text encoder) of a checkpoint source."""
    if not source.checkpoint:
        raise ConfigError("this needs a checkpoint (--checkpoint DIR), not engines")
    from .errors import require

    require("torch", "export")
    from quantize.model.checkpoint import DTYPES as TORCH_DTYPES
    from quantize.variants import load_policy as load_torch

    kwargs = {"base": source.base, "prompt_cache": source.prompt_cache, "canvas": source.canvas,
              "dtype": None if source.dtype == "auto" else TORCH_DTYPES[source.dtype]}
    if source.steps is not None:
        kwargs["steps"] = int(source.steps)
    return load_torch(source.checkpoint, device=source.device, compile=source.compile,
                      **{k: v for k, v in kwargs.items() if v is not None})
