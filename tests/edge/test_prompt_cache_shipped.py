"""The checkpoint's own prompt cache (CHECKPOINT/prompts.npz): read after the given one, never written; its hits
go into the given cache; a stand-in serves an export's example without being stored; the text encoder's identity
is read from the entries when its files are not shipped (torch-free: edge/prompt_cache.py)."""
import numpy as np
import pytest

from edge.errors import ConfigError
from edge.prompt_cache import PromptCache, TextSource, cached_encoder, checkpoint_caches


def _cache(path, entries):
    cache = PromptCache(path)
    for instruction, encoder, emb in entries:
        cache.put(instruction, encoder, emb)
    cache.save()
    return cache


def test_shipped_cache_is_read_after_the_given_one_and_never_written(tmp_path):
    a, b = np.ones((3, 4), np.float32), np.full((2, 4), 2, np.float32)
    _cache(tmp_path / "ckpt" / "prompts.npz", [("open the drawer", "enc", a), ("stack the cups", "enc", b)])
    shipped_bytes = (tmp_path / "ckpt" / "prompts.npz").read_bytes()
    _cache(tmp_path / "given.npz", [("stack the cups", "enc", a)])
    given, shipped = checkpoint_caches(tmp_path / "ckpt", tmp_path / "given.npz")
    calls = []
    source = TextSource("enc", given, lambda t: calls.append(t) or np.zeros((1, 4), np.float32), shipped=shipped)
    assert np.array_equal(source("stack the cups"), a)  # the given cache wins
    assert np.array_equal(source("open the drawer"), a) and not calls  # from the shipped one, no encoder run
    assert PromptCache(tmp_path / "given.npz").get("open the drawer", "enc") is not None  # copied into the given
    source("pick up the red block")
    assert calls == ["pick up the red block"]
    assert (tmp_path / "ckpt" / "prompts.npz").read_bytes() == shipped_bytes
    assert source.cached_instructions() == ["stack the cups", "open the drawer", "pick up the red block"]
    same, none = checkpoint_caches(tmp_path / "ckpt", tmp_path / "ckpt" / "prompts.npz")
    assert same.path == tmp_path / "ckpt" / "prompts.npz" and none is None  # one file counts once
    assert checkpoint_caches(tmp_path / "nothing_shipped") == (None, None)


def test_stand_in_serves_without_storing(tmp_path):
    shipped = _cache(tmp_path / "s.npz", [("open the drawer", "enc", np.ones((3, 4), np.float32))])
    given = PromptCache(tmp_path / "g.npz")
    source = TextSource("enc", given, None, shipped=shipped)
    with pytest.raises(ConfigError, match="'example' is not in the prompt cache"):
        source("example")
    source.stand_in("example", "open the drawer")
    assert np.array_equal(source("example"), np.ones((3, 4), np.float32))
    assert [e["instruction"] for e in PromptCache(tmp_path / "g.npz").entries()] == ["open the drawer"]


def test_identity_from_the_entries(tmp_path):
    one = _cache(tmp_path / "a.npz", [("a", "qwen3-1", np.ones((2, 8), np.float32)),
                                      ("b", "qwen3-2", np.ones((2, 6), np.float32)),
                                      ("c", "ovis-ids-1", np.ones(5, np.int64))])
    width8 = lambda e: e["encoder"].startswith("qwen3-") and e["width"] == 8  # noqa: E731
    assert cached_encoder([one, None], width8, "the text encoder") == "qwen3-1"
    assert cached_encoder([one], lambda e: e["encoder"].startswith("ovis-ids-"), "the tokenizer") == "ovis-ids-1"
    assert cached_encoder([None], width8, "the text encoder") is None
    two = _cache(tmp_path / "b.npz", [("a", "qwen3-3", np.ones((2, 8), np.float32))])
    with pytest.raises(ConfigError, match=r"2 text encoders \(qwen3-1 in .*a\.npz; qwen3-3 in .*b\.npz\)"):
        cached_encoder([one, two], width8, "the text encoder")
