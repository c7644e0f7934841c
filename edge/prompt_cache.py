"""Prompt-embedding cache: the instruction is constant over an episode, so its text-encoder output is computed
once and stored on disk; the control path never runs the text encoder when the cache has the instruction.

File format (one `.npz`, no pickle): `index` is a JSON string, a list of
`{"key", "instruction", "encoder", "tokens", "width", "created"}`; each entry is stored as array `emb_<key>`:
float32 [tokens, width] text embeddings (valid tokens only, already trimmed) for FLUX.2, or int64 [tokens] token ids
for variants whose text encoder must see the image every step (Ovis-U1). `key` = sha256(encoder + NUL + instruction)[:20], so
the same instruction under another text encoder (other weights, layers, template) is a different entry."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .errors import ConfigError

log = logging.getLogger(__name__)


def cache_key(instruction: str, encoder: str) -> str:
    return hashlib.sha256(f"{encoder}\0{instruction.strip()}".encode()).hexdigest()[:20]


class PromptCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._index: dict[str, dict] = {}
        self._arrays: dict[str, np.ndarray] = {}
        if self.path.exists():
            try:
                with np.load(self.path, allow_pickle=False) as data:
                    entries = json.loads(str(data["index"]))
                    for entry in entries:
                        self._index[entry["key"]] = entry
                        self._arrays[entry["key"]] = np.asarray(data["emb_" + entry["key"]])
            except (OSError, ValueError, KeyError) as exc:
                raise ConfigError(f"prompt cache {self.path} is unreadable ({exc}); delete it and rebuild it with "
                                  "`imagewam-edge prompts add`") from None

    def __len__(self) -> int:
        return len(self._index)

    def entries(self) -> list[dict]:
        return list(self._index.values())

    def get(self, instruction: str, encoder: str) -> np.ndarray | None:
        return self._arrays.get(cache_key(instruction, encoder))

    def put(self, instruction: str, encoder: str, embedding: np.ndarray) -> None:
        emb = np.ascontiguousarray(embedding)
        if emb.dtype.kind == "f":
            emb = emb.astype(np.float32)
        if emb.ndim not in (1, 2):
            raise ValueError(f"prompt entry must be [tokens, width] embeddings or [tokens] ids, got {emb.shape}")
        key = cache_key(instruction, encoder)
        self._arrays[key] = emb
        self._index[key] = {"key": key, "instruction": instruction.strip(), "encoder": encoder, "tokens": int(emb.shape[0]),
                            "width": int(emb.shape[1]) if emb.ndim == 2 else 0, "dtype": str(emb.dtype), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}

    def save(self) -> Path:
        """Atomic write (temporary file + rename): an interrupted save never leaves a broken cache."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"emb_" + k: v for k, v in self._arrays.items()}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, index=np.array(json.dumps(list(self._index.values()))), **arrays)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return self.path


class TextSource:
    """Instruction -> valid-token embedding [T, width]: from the cache, else from `encoder` (then cached)."""

    def __init__(self, encoder_id: str, cache: PromptCache | None = None, encoder=None):
        self.encoder_id, self.cache, self.encoder = encoder_id, cache, encoder
        self.encoder_calls = 0

    def __call__(self, instruction: str) -> np.ndarray:
        if self.cache is not None:
            hit = self.cache.get(instruction, self.encoder_id)
            if hit is not None:
                return hit
        if self.encoder is None:
            where = self.cache.path if self.cache is not None else "(no cache given)"
            raise ConfigError(f"instruction {instruction!r} is not in the prompt cache {where} for text encoder "
                              f"{self.encoder_id}, and no text encoder is loaded here; add it on the workstation: "
                              f"imagewam-edge prompts add --checkpoint DIR --prompt-cache FILE --instruction \"...\"")
        self.encoder_calls += 1
        emb = self.encoder(instruction)
        if self.cache is not None:
            self.cache.put(instruction, self.encoder_id, emb)
            self.cache.save()
        return emb
