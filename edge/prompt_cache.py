"""Prompt-embedding cache: the instruction is constant over an episode, so its text-encoder output is computed
once and stored on disk; the control path never runs the text encoder when the cache has the instruction.

File format (one `.npz`, no pickle): `index` is a JSON string, a list of
`{"key", "instruction", "encoder", "tokens", "valid", "width", "created"}`; each entry is stored as array
`emb_<key>`: float32 [tokens, width] text embeddings for FLUX.2, or int64 [tokens] token ids for variants whose text
encoder must see the image every step (Ovis-U1). `valid` is the number of real (unpadded) tokens: `get` returns only
those rows, so an embedding padded to the encoder's context length (512 in the official code) is trimmed, never fed
to the model with its padding (that moves the actions by ~6e-2). An entry written before `valid` existed is taken
as trimmed unless it has PADDED_LENGTH or more rows, which is refused with the fix. `key` = sha256(encoder + NUL + instruction)[:20], so
the same instruction under another text encoder (other weights, layers, template) is a different entry.

A checkpoint may ship its own cache, CHECKPOINT/prompts.npz (as an engines directory ships ENGINES/prompts.npz):
the torch loaders read it (never write it) after the cache given with --prompt-cache, so a checkpoint whose base/
holds only the autoencoder runs every instruction it has cached. Without the text encoder its identity comes from
the caches' entries (`cached_encoder`)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import ConfigError

log = logging.getLogger(__name__)


PADDED_LENGTH = 512  # the official Qwen3 prompt length: an entry this long without `valid` is padded text


def cache_key(instruction: str, encoder: str) -> str:
    return hashlib.sha256(f"{encoder}\0{instruction.strip()}".encode()).hexdigest()[:20]


class PromptCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._index: dict[str, dict] = {}
        self._arrays: dict[str, np.ndarray] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        """Read the whole file now: a truncated or hand-edited cache is refused here, naming what is wrong."""
        fix = "delete it and rebuild it with `imagewam-edge prompts add` (or copy it again from the workstation)"
        try:
            data = np.load(self.path, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ConfigError(f"prompt cache {self.path} is not a readable .npz file (truncated or corrupt: "
                              f"{type(exc).__name__}: {exc}); {fix}") from None
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ConfigError(f"prompt cache {self.path} holds a single array, not an .npz archive with `index`; {fix}")
        with data:
            if "index" not in data.files:
                raise ConfigError(f"prompt cache {self.path} has no `index` array (it holds {sorted(data.files)[:6]}); "
                                  f"{fix}")
            try:
                entries = json.loads(str(self._member(data, "index")))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"prompt cache {self.path}: `index` is not valid JSON ({exc}); {fix}") from None
            if not isinstance(entries, list):
                raise ConfigError(f"prompt cache {self.path}: `index` must be a JSON list of entries, got "
                                  f"{type(entries).__name__}; {fix}")
            for i, entry in enumerate(entries):
                key = entry.get("key") if isinstance(entry, dict) else None
                if not isinstance(key, str) or not isinstance(entry.get("instruction"), str):
                    raise ConfigError(f"prompt cache {self.path}: `index[{i}]` needs string fields `key` and "
                                      f"`instruction`, got {entry!r:.120}; {fix}")
                if "emb_" + key not in data.files:
                    raise ConfigError(f"prompt cache {self.path}: `index[{i}]` ({entry['instruction']!r}) has no "
                                      f"array `emb_{key}`; {fix}")
                self._index[key] = entry
                self._arrays[key] = np.asarray(self._member(data, "emb_" + key))

    def _member(self, data, name: str) -> np.ndarray:
        try:
            return data[name]
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
            raise ConfigError(f"prompt cache {self.path}: array `{name}` cannot be read (truncated or corrupt: "
                              f"{type(exc).__name__}: {exc}); delete the file and rebuild it with "
                              "`imagewam-edge prompts add`") from None

    def __len__(self) -> int:
        return len(self._index)

    def entries(self) -> list[dict]:
        return list(self._index.values())

    def get(self, instruction: str, encoder: str) -> np.ndarray | None:
        """The entry's valid tokens ([valid, width] or [valid]), or None when the instruction is not cached."""
        key = cache_key(instruction, encoder)
        emb = self._arrays.get(key)
        if emb is None:
            return None
        entry = self._index[key]
        valid = entry.get("valid")
        if valid is None:
            if emb.ndim == 2 and emb.shape[0] >= PADDED_LENGTH:
                raise ConfigError(f"prompt cache {self.path}: the entry for {entry['instruction']!r} has {emb.shape[0]} "
                                  "tokens and no `valid` length: it looks padded to the text encoder's context, and "
                                  "padded text changes the actions. Fix: add it again with `imagewam-edge prompts add` "
                                  "(which stores the valid length), or PromptCache.put(..., valid=N)")
            return emb
        if not isinstance(valid, int) or not 1 <= valid <= emb.shape[0]:
            raise ConfigError(f"prompt cache {self.path}: the entry for {entry['instruction']!r} has `valid` {valid!r} "
                              f"for {emb.shape[0]} tokens (must be 1..{emb.shape[0]}); add it again with "
                              "`imagewam-edge prompts add`")
        return emb[:valid]

    def put(self, instruction: str, encoder: str, embedding: np.ndarray, valid: int | None = None) -> None:
        """Store an instruction's embedding [tokens, width] (or ids [tokens]); `valid` = how many leading tokens are
        real when the array is padded (default: all of them)."""
        emb = np.ascontiguousarray(embedding)
        if emb.dtype.kind == "f":
            emb = emb.astype(np.float32)
        if emb.ndim not in (1, 2):
            raise ValueError(f"prompt entry must be [tokens, width] embeddings or [tokens] ids, got {emb.shape}")
        valid = int(emb.shape[0]) if valid is None else int(valid)
        if not 1 <= valid <= emb.shape[0]:
            raise ValueError(f"prompt entry for {instruction!r}: valid length {valid} must be 1..{emb.shape[0]}")
        key = cache_key(instruction, encoder)
        self._arrays[key] = emb
        self._index[key] = {"key": key, "instruction": instruction.strip(), "encoder": encoder,
                            "tokens": int(emb.shape[0]), "valid": valid,
                            "width": int(emb.shape[1]) if emb.ndim == 2 else 0, "dtype": str(emb.dtype),
                            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}

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


SHIPPED_CACHE = "prompts.npz"  # the cache a checkpoint (or an engines directory) ships beside its weights


def checkpoint_caches(checkpoint: str | Path, prompt_cache: str | Path | None = None
                      ) -> tuple[PromptCache | None, PromptCache | None]:
    """(the cache given with --prompt-cache, read and written; CHECKPOINT/prompts.npz, read only) for a checkpoint's
    torch policy; either may be None (none given / none shipped; the same file counts once, as the given one)."""
    shipped_path = Path(checkpoint) / SHIPPED_CACHE
    given = PromptCache(prompt_cache) if prompt_cache else None
    if given is not None and shipped_path.exists() and given.path.resolve() == shipped_path.resolve():
        return given, None
    return given, (PromptCache(shipped_path) if shipped_path.is_file() else None)


def cached_encoder(caches, accept, what: str) -> str | None:
    """The one text-encoder identity of the entries in `caches` that `accept(entry)` admits (the variant's kind and
    width), None when there is none; more than one is refused, since without the text encoder it cannot be told
    which of them the checkpoint's base release is."""
    found: dict[str, set[str]] = {}
    for cache in caches:
        if cache is None:
            continue
        for entry in cache.entries():
            if isinstance(entry.get("encoder"), str) and accept(entry):
                found.setdefault(entry["encoder"], set()).add(str(cache.path))
    if len(found) > 1:
        listing = "; ".join(f"{enc} in {', '.join(sorted(paths))}" for enc, paths in sorted(found.items()))
        raise ConfigError(f"the prompt caches hold entries of {len(found)} text encoders ({listing}) and {what} is "
                          "not here to tell which one this checkpoint uses; ship it (see the README, \"Your "
                          "checkpoint\"), or keep one encoder's entries: rebuild the cache with `imagewam-edge prompts "
                          "add` from this checkpoint's base release")
    return next(iter(found), None)


class TextSource:
    """Instruction -> valid-token embedding [T, width]: from `cache`, else from the read-only `shipped` cache (a hit
    there is copied into `cache`, so an export's prompts.npz carries it), else from `encoder` (then cached)."""

    def __init__(self, encoder_id: str, cache: PromptCache | None = None, encoder=None,
                 shipped: PromptCache | None = None):
        self.encoder_id, self.cache, self.encoder, self.shipped = encoder_id, cache, encoder, shipped
        self.encoder_calls = 0
        self._stand_ins: dict[str, str] = {}

    def stand_in(self, instruction: str, by: str) -> None:
        """Serve `instruction` with the embedding of `by` (a cached instruction), never storing it under
        `instruction`: an export traces its engines on an example instruction that a checkpoint without its text
        encoder may not have cached; any real embedding traces the same graphs."""
        self._stand_ins[instruction.strip()] = by

    def lookup(self, instruction: str) -> np.ndarray | None:
        """The cached embedding (given cache first, then the shipped one), None on a miss; runs no encoder."""
        for cache in (self.cache, self.shipped):
            if cache is not None:
                hit = cache.get(instruction, self.encoder_id)
                if hit is not None:
                    return hit
        return None

    def cached_instructions(self) -> list[str]:
        """The instructions either cache holds for this text encoder (given cache first, no repeats)."""
        out: list[str] = []
        for cache in (self.cache, self.shipped):
            for entry in cache.entries() if cache is not None else ():
                if entry.get("encoder") == self.encoder_id and entry["instruction"] not in out:
                    out.append(entry["instruction"])
        return out

    def __call__(self, instruction: str) -> np.ndarray:
        instruction = self._stand_ins.get(instruction.strip(), instruction)
        hit = self.cache.get(instruction, self.encoder_id) if self.cache is not None else None
        if hit is not None:
            return hit
        hit = self.shipped.get(instruction, self.encoder_id) if self.shipped is not None else None
        if hit is not None:
            if self.cache is not None:
                self.cache.put(instruction, self.encoder_id, hit)
                self.cache.save()
            return hit
        if self.encoder is None:
            where = self.cache.path if self.cache is not None else "(no cache given)"
            raise ConfigError(f"instruction {instruction!r} is not in the prompt cache {where} for text encoder "
                              f"{self.encoder_id}, and no text encoder is loaded here; add it on the workstation: "
                              f"imagewam-edge prompts add --checkpoint DIR --prompt-cache FILE --instruction \"...\"")
        self.encoder_calls += 1
        emb = self.encoder(instruction)  # an encoder whose files are not here raises, naming them and the fixes
        if self.cache is not None:
            self.cache.put(instruction, self.encoder_id, emb)
            self.cache.save()
        return emb
