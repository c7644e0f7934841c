"""Where a policy comes from and how it runs: one `PolicySource` record (core, no torch). `edge/loader.py` (CLI layer)
assembles engines or a checkpoint from it for run, infer, eval, bench and bench --compare; the torch side
(quantize.variants.load_source) assembles a checkpoint from the same record for export, verify and the loader."""
from __future__ import annotations

from dataclasses import dataclass

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
