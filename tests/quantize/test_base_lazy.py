"""base/ needs only what is used (issue 15 item 6): a FLUX.2 checkpoint whose base/ holds only vae/ and whose
instructions come from a prompt cache (CHECKPOINT/prompts.npz, or --prompt-cache) infers like the full base and
exports; an uncached instruction fails naming it, the missing folders and both fixes; no base/vae fails clearly."""
import json
import shutil

import numpy as np
import pytest

from edge.cli import main
from edge.errors import CheckpointError, ConfigError
from edge.loader import PolicySource, load_checkpoint_policy, load_policy
from edge.prompt_cache import PromptCache

CACHED = ("pick up the red block", "open the top drawer")


def _vae_only(src, dst, cache=True):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("text_encoder", "tokenizer", "prompts.npz"))
    assert sorted(p.name for p in (dst / "base").iterdir()) == ["vae"]
    if cache:
        shutil.copy(src.parent / "prompts.npz", dst / "prompts.npz")
    return dst


@pytest.fixture(scope="module")
def vae_only(demo_checkpoint, tmp_path_factory):
    """The demo with base/vae only, plus CHECKPOINT/prompts.npz made by `prompts add` on the full demo."""
    root = tmp_path_factory.mktemp("vae_only")
    args = sum((["--instruction", t] for t in CACHED), [])
    assert main(["prompts", "add", "--checkpoint", str(demo_checkpoint), "--prompt-cache", str(root / "prompts.npz"),
                 "--json", *args]) == 0
    ckpt = root / "ckpt"
    shutil.copytree(demo_checkpoint, ckpt, ignore=shutil.ignore_patterns("text_encoder", "tokenizer"))
    shutil.copy(root / "prompts.npz", ckpt / "prompts.npz")
    return ckpt


def _images(ckpt):
    return sum((["--image", str(p)] for p in sorted((ckpt / "samples").glob("*.png"))), [])


def _infer(capsys, ckpt, instruction="pick up the red block", *extra):
    capsys.readouterr()
    code = main(["infer", "--checkpoint", str(ckpt), *_images(ckpt), "--instruction", instruction,
                 "--state", "0.1,0,0,0,0,0,0.02,0.02", "--json", *extra])
    out = capsys.readouterr().out
    assert code == 0
    return np.asarray(json.loads(out)["actions"])


def test_vae_only_base_infers_like_the_full_base(demo_checkpoint, vae_only, tmp_path, capsys):
    shipped = (vae_only / "prompts.npz").read_bytes()
    full = _infer(capsys, demo_checkpoint)  # the text encoder runs
    assert np.array_equal(_infer(capsys, vae_only), full)  # CHECKPOINT/prompts.npz, read by default
    moved = _vae_only(vae_only, tmp_path / "ckpt", cache=False)  # the same cache given with --prompt-cache
    given = tmp_path / "given.npz"
    shutil.copy(vae_only / "prompts.npz", given)
    assert np.array_equal(_infer(capsys, moved, "pick up the red block", "--prompt-cache", str(given)), full)
    loaded = load_checkpoint_policy(PolicySource(checkpoint=str(vae_only)))
    reference = load_checkpoint_policy(PolicySource(checkpoint=str(demo_checkpoint)))
    assert loaded.policy.spec.text_encoder == reference.policy.spec.text_encoder  # the id the cache was made with
    obs = {"images": [np.full((224, 224, 3), 90, np.uint8)] * 2, "state": np.zeros(8), "instruction": CACHED[1]}
    a = loaded.policy.infer(obs, seed=3)["actions"]
    assert np.array_equal(a, reference.policy.infer(obs, seed=3)["actions"])
    assert not loaded.text_encoder.available and loaded.text_encoder.loads == 0
    assert loaded.policy.text_source.encoder_calls == 0
    assert (vae_only / "prompts.npz").read_bytes() == shipped  # read, never written


def test_export_needs_no_text_encoder(demo_checkpoint, vae_only, tmp_path):
    """The engines carry the checkpoint's cached instructions; the example inputs trace on a cached one."""
    pytest.importorskip("onnxruntime")
    from quantize.export import EXAMPLE_INSTRUCTION, export_checkpoint

    out = tmp_path / "engines"
    export_checkpoint(vae_only, out, instructions=[CACHED[0]])
    spec = json.loads((out / "policy.json").read_text())
    identity = load_checkpoint_policy(PolicySource(checkpoint=str(demo_checkpoint))).policy.spec.text_encoder
    assert spec["text_encoder"] == identity
    cached = {e["instruction"] for e in PromptCache(out / "prompts.npz").entries()}
    assert cached == set(CACHED) and EXAMPLE_INSTRUCTION not in cached  # no stand-in entry is stored
    obs = {"images": [np.full((224, 224, 3), 90, np.uint8)] * 2, "state": np.zeros(8), "instruction": CACHED[1]}
    engines = load_policy(PolicySource(engines=str(out)))
    torch_policy = load_policy(PolicySource(checkpoint=str(vae_only)))
    np.testing.assert_allclose(engines.infer(obs, seed=0)["actions_normalized"],
                               torch_policy.infer(obs, seed=0)["actions_normalized"], atol=1e-4)


def test_uncached_instruction_without_text_encoder_names_both_fixes(vae_only, capsys):
    policy = load_policy(PolicySource(checkpoint=str(vae_only)))
    obs = {"images": [np.full((224, 224, 3), 90, np.uint8)] * 2, "state": np.zeros(8), "instruction": "stack the cups"}
    with pytest.raises(CheckpointError) as err:
        policy.infer(obs, seed=0)
    msg = str(err.value)
    assert "'stack the cups'" in msg and str(vae_only / "prompts.npz") in msg
    assert str(vae_only / "base" / "text_encoder") in msg and str(vae_only / "base" / "tokenizer") in msg
    assert (f"imagewam-edge prompts add --checkpoint {vae_only} --prompt-cache {vae_only / 'prompts.npz'} "
            "--instruction 'stack the cups'") in msg
    assert "ship the text encoder" in msg and "text_encoder/` and `tokenizer/`" in msg
    capsys.readouterr()  # filling the cache needs the text encoder: the CLI says so, no traceback
    assert main(["prompts", "add", "--checkpoint", str(vae_only), "--prompt-cache", str(vae_only.parent / "x.npz"),
                 "--instruction", "stack the cups"]) != 0
    err = capsys.readouterr().err
    assert "text_encoder" in err and "Traceback" not in err and not (vae_only.parent / "x.npz").exists()


def test_no_vae_fails_naming_it(vae_only, tmp_path):
    ckpt = _vae_only(vae_only, tmp_path / "ckpt")
    shutil.rmtree(ckpt / "base" / "vae")
    with pytest.raises(CheckpointError) as err:
        load_policy(PolicySource(checkpoint=str(ckpt)))
    msg = str(err.value)
    assert "vae/config.json" in msg and str(ckpt / "base" / "vae") in msg and "AutoencoderKLFlux2" in msg


def test_a_cache_of_two_text_encoders_is_refused_without_the_text_encoder(vae_only, tmp_path):
    ckpt = _vae_only(vae_only, tmp_path / "ckpt")
    cache = PromptCache(ckpt / "prompts.npz")
    width = cache.entries()[0]["width"]
    cache.put("open the top drawer", "qwen3-0123456789abcdef", np.zeros((5, width), np.float32))
    cache.save()
    with pytest.raises(ConfigError, match="2 text encoders"):
        load_policy(PolicySource(checkpoint=str(ckpt)))


def test_prompts_add_needs_the_text_encoder_not_the_autoencoder(demo_checkpoint, tmp_path, capsys):
    """Filling a cache on the workstation that holds the text encoder: base/ without vae/ is enough; the same
    embeddings as from the full release. Without the text encoder the error names it and the fixes."""
    def add(ckpt, cache):
        capsys.readouterr()
        assert main(["prompts", "add", "--checkpoint", str(ckpt), "--prompt-cache", str(cache),
                     "--instruction", CACHED[0], "--json"]) == 0
        return json.loads(capsys.readouterr().out)["encoder"]

    full_id = add(demo_checkpoint, tmp_path / "full.npz")
    no_vae = tmp_path / "no_vae"
    shutil.copytree(demo_checkpoint, no_vae, ignore=shutil.ignore_patterns("vae", "prompts.npz"))
    assert not (no_vae / "base" / "vae").exists()
    assert add(no_vae, tmp_path / "given.npz") == full_id  # the same text encoder, told by its files
    expected = PromptCache(tmp_path / "full.npz").get(CACHED[0], full_id)
    assert np.array_equal(PromptCache(tmp_path / "given.npz").get(CACHED[0], full_id), expected)
    no_text = _vae_only(demo_checkpoint, tmp_path / "no_text", cache=False)
    capsys.readouterr()
    assert main(["prompts", "add", "--checkpoint", str(no_text), "--prompt-cache", str(tmp_path / "x.npz"),
                 "--instruction", CACHED[0]]) != 0
    err = capsys.readouterr().err
    assert "text encoder was not found" in err and "text_encoder/" in err and "--engines" in err
    assert not (tmp_path / "x.npz").exists()


def test_bench_compare_reference_refuses_before_exporting(vae_only, capsys):
    """The official path encodes the instruction every step: without base/text_encoder the comparison is refused at
    once (no export of the checkpoint first), naming what to add."""
    capsys.readouterr()
    code = main(["bench", "--checkpoint", str(vae_only), "--compare", "reference", "--instruction", CACHED[0]])
    err = capsys.readouterr().err
    assert code != 0
    assert "text encoder was not found" in err and "bench --compare reference" in err
    assert "exporting" not in err
