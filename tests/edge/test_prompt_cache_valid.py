"""Prompt-cache entries carry their valid length: padded text is trimmed or refused, never fed to the model."""
import json

import numpy as np
import pytest

from edge.errors import ConfigError
from edge.prompt_cache import PADDED_LENGTH, PromptCache


def test_a_padded_entry_comes_back_trimmed_to_its_valid_tokens(tmp_path):
    padded = np.zeros((PADDED_LENGTH, 8), np.float32)
    padded[:44] = np.random.default_rng(0).standard_normal((44, 8))
    cache = PromptCache(tmp_path / "prompts.npz")
    cache.put("pick up the bowl", "enc", padded, valid=44)
    cache.save()
    again = PromptCache(tmp_path / "prompts.npz").get("pick up the bowl", "enc")
    assert again.shape == (44, 8)
    np.testing.assert_array_equal(again, padded[:44])


def test_an_old_entry_without_valid_length_that_looks_padded_is_refused(tmp_path):
    path = tmp_path / "prompts.npz"
    cache = PromptCache(path)
    cache.put("stack the cups", "enc", np.ones((PADDED_LENGTH, 8), np.float32))
    cache.put("short one", "enc", np.ones((12, 8), np.float32))
    entries = [{k: v for k, v in e.items() if k != "valid"} for e in cache.entries()]  # as written before `valid`
    arrays = dict(np.load(cache.save()))
    arrays["index"] = np.array(json.dumps(entries))
    np.savez(path, **arrays)
    old = PromptCache(path)
    assert old.get("short one", "enc").shape == (12, 8)  # a trimmed old entry still works
    with pytest.raises(ConfigError, match="padded.*prompts add"):
        old.get("stack the cups", "enc")


def test_a_valid_length_outside_the_entry_is_refused(tmp_path):
    cache = PromptCache(tmp_path / "prompts.npz")
    with pytest.raises(ValueError, match="valid length 9 must be 1..8"):
        cache.put("x", "enc", np.ones((8, 4), np.float32), valid=9)
    cache.put("x", "enc", np.ones((8, 4), np.float32), valid=3)
    path = cache.save()
    index = json.loads(str(np.load(path)["index"]))
    index[0]["valid"] = 20  # hand-edited
    arrays = dict(np.load(path))
    arrays["index"] = np.array(json.dumps(index))
    np.savez(path, **arrays)
    with pytest.raises(ConfigError, match="`valid` 20 for 8 tokens"):
        PromptCache(path).get("x", "enc")
