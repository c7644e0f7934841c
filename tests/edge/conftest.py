"""Fixtures of the control-loop tests: the embedded default set up once per session in a temporary cache."""
import os

import pytest


@pytest.fixture(scope="session")
def default_cache(tmp_path_factory):
    """IMAGEWAM_EDGE_CACHE with the embedded default's engines built by `ensure_default_engines` (first use)."""
    pytest.importorskip("torch")
    cache = tmp_path_factory.mktemp("edge-cache")
    old = os.environ.get("IMAGEWAM_EDGE_CACHE")
    os.environ["IMAGEWAM_EDGE_CACHE"] = str(cache)
    from edge.default import default_engines_dir, ensure_default_engines

    messages = []
    engines = ensure_default_engines(progress=messages.append)
    assert engines == default_engines_dir() and (engines / "policy.json").is_file()
    assert any("first run" in m for m in messages)
    assert ensure_default_engines(progress=messages.append) == engines  # cached: no second build
    yield cache
    if old is None:
        os.environ.pop("IMAGEWAM_EDGE_CACHE", None)
    else:
        os.environ["IMAGEWAM_EDGE_CACHE"] = old


@pytest.fixture(scope="session")
def sim_engines(default_cache):
    from edge.default import default_engines_dir

    return default_engines_dir()
