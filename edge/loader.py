"""One way to get a policy (CLI layer, docs/architecture.md): a `PolicySource` record says where the policy comes
from and how it runs; `load_policy` assembles it. `run`, `infer`, `eval`, `bench` and `bench --compare`
go through here (export and verify, in quantize/, through the same record and quantize.variants.load_source), so a checkpoint loads the same way (base, dtype, prompt cache, steps, canvas, device) whichever
command asks.

  engines DIR  -> onnxruntime (default) or tensorrt, torch-free (edge/engines.py); "@default": the embedded default
  checkpoint   -> the torch backend of the checkpoint's variant (quantize/variants.py; workstation or a GPU)"""
from __future__ import annotations

from typing import Callable

from .errors import ConfigError
from .policy_source import PolicySource  # noqa: F401  (the record lives in the core; callers import it from here)


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
    from quantize.variants import load_source

    return load_source(source)
