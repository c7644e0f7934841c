"""One record per model variant (edge/model_variants.py), registered once: a new variant registered in one place is
picked up by detection, the runtime prefix stage, the engine list, the roofline, the CLI's --variant choices, demo
writing, the torch loader and export; a name nobody registered is a ConfigError that lists the known ones."""
import shutil
from dataclasses import replace

import pytest
import yaml

from edge import model_variants as mv
from edge import roofline as rl
from edge.cli import build_parser
from edge.engines import engine_components
from edge.errors import CheckpointError, ConfigError
from edge.policy import PolicySpec
from edge.prefix_stages import Flux2Prefix
from edge.transforms import get_canvas, get_embodiment

STANDIN = "omnigen2-standin"


@pytest.fixture
def standin():
    """OmniGen2 stands in as a renamed copy of FLUX.2 (tiny demo + the 4B records): one registration, nothing else."""
    tiny, four_b = mv.find_size("flux2-tiny")[1], mv.find_size("flux2-4b")[1]
    record = mv.register(replace(mv.FLUX2, name=STANDIN,
                                 sizes=(replace(tiny, name=f"{STANDIN}-tiny"), replace(four_b, name=STANDIN)),
                                 train_config=(("model.stack", "omnigen2"),), key_prefixes=("omnigen2.",)))
    yield record
    mv.unregister(STANDIN)


def _spec(variant):
    return PolicySpec(variant=variant, action_dim=7, state_dim=8, text_width=96, head_dim=32, axes_dim=(8, 8, 8, 8),
                      theta=2000.0, embodiment="libero", text_encoder="demo")


def test_the_builtin_variants():
    assert mv.variant_names() == ["flux2", "ovis-u1"]
    assert mv.size_names() == ["flux2-4b", "flux2-9b", "flux2-tiny", "ovis-u1", "ovis-u1-tiny"]
    assert mv.roofline_names() == ("flux2-4b", "flux2-9b", "ovis-u1")
    assert mv.get_variant("flux2").components == ("vision_encoder", "prefill", "denoise_step")
    assert mv.get_variant("flux2").text_kind == "embedding" and mv.get_variant("ovis-u1").text_kind == "token_ids"
    assert mv.variant_from_train_config({"model": {"variant": "klein-4B"}}) is mv.FLUX2
    assert mv.variant_from_train_config({"model": {"stack": "ovis_u1"}}) is mv.OVIS_U1
    assert mv.variant_from_train_config({"model": {"variant": "sd3"}}) is None
    ovis_keys = ["mixtures.video.transformer.txt_in.individual_token_refiner.blocks.0.norm1.weight"]
    assert mv.variant_from_keys(ovis_keys) is mv.OVIS_U1


def test_a_variant_registered_once_is_picked_up_everywhere(standin):
    # detection: train_config's edge.variant, its model section, the checkpoint's tensor names
    assert mv.variant_from_train_config({"edge": {"variant": STANDIN}}) is standin
    assert mv.variant_from_train_config({"model": {"stack": "omnigen2"}}) is standin
    assert mv.variant_from_keys(["omnigen2.blocks.0.attn.qkv.weight", "mixtures.action.x"]) is standin
    # the runtime: prefix stage and engines
    spec = _spec(STANDIN)
    assert isinstance(mv.prefix_stage(spec, get_canvas(get_embodiment("libero").canvas)), Flux2Prefix)
    assert engine_components(spec) == ["vision_encoder", "prefill", "denoise_step"]
    # the roofline: its published size has figures, in `all` too
    assert STANDIN in mv.roofline_names()
    assert rl.step_costs(STANDIN, "int8") == rl.step_costs("flux2-4b", "int8")
    rows = rl.model_only("all", "orin-agx-64gb", "int8", video_frames=(1,), video_passes=(1,))["rows"]
    assert [r["variant"] for r in rows] == ["flux2-4b", "flux2-9b", "ovis-u1", STANDIN]
    # the CLI's --variant choices (demo-checkpoint)
    args = build_parser().parse_args(["demo-checkpoint", "--variant", f"{STANDIN}-tiny", "--out", "x"])
    assert args.variant == f"{STANDIN}-tiny"


def test_names_nobody_registered_are_refused_with_the_known_ones(standin):
    with pytest.raises(ConfigError, match=r"unknown model variant 'omnigen2'; known: \['flux2', 'omnigen2-standin'"):
        mv.get_variant("omnigen2")
    with pytest.raises(ConfigError, match="unknown model variant 'omnigen2'.*'ovis-u1'"):
        mv.prefix_stage(_spec("omnigen2"), get_canvas("libero"))
    with pytest.raises(ConfigError, match="unknown model size 'omnigen2-7b'.*'omnigen2-standin-tiny'"):
        mv.find_size("omnigen2-7b")
    with pytest.raises(ConfigError, match=r"--variant 'omnigen2-7b': choose one of .*'omnigen2-standin'\] \(or all\)"):
        rl.step_costs("omnigen2-7b", "int8")
    with pytest.raises(CheckpointError, match="edge.variant 'omnigen2' is not one of"):
        mv.variant_from_train_config({"edge": {"variant": "omnigen2"}})
    with pytest.raises(CheckpointError, match="cannot tell the model variant"):
        mv.variant_from_keys(["something.else"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo-checkpoint", "--variant", "omnigen2-7b", "--out", "x"])


def test_registration_is_checked(standin):
    with pytest.raises(ConfigError, match="already registered"):
        mv.register(standin)
    with pytest.raises(ConfigError, match="already belong to another variant"):
        mv.register(replace(standin, name="other"))
    with pytest.raises(ConfigError, match="'module:function'"):
        replace(standin, name="other", policy_loader="quantize.torch_backend.load_torch_policy")
    with pytest.raises(ConfigError, match="prefix_stage"):
        replace(standin, name="other", prefix_stage=object)
    with pytest.raises(CheckpointError, match=r"several model variants \['flux2', 'other'\]"):
        other = replace(standin, name="other", sizes=(replace(standin.sizes[0], name="other-tiny"),),
                        train_config=(("model.variant", "klein*"),))
        mv.register(other)
        try:
            mv.variant_from_train_config({"model": {"variant": "klein-4B"}})
        finally:
            mv.unregister("other")


def test_unregistering_removes_the_variant_everywhere(standin):
    mv.unregister(STANDIN)
    try:
        assert STANDIN not in mv.roofline_names() and f"{STANDIN}-tiny" not in mv.size_names()
        with pytest.raises(ConfigError, match="unknown model variant"):
            engine_components(_spec(STANDIN))
    finally:
        mv.register(standin)


def test_a_checkpoint_without_train_config_is_told_by_its_tensor_names(demo_checkpoint, tmp_path):
    shutil.copy(demo_checkpoint / "model.pt", tmp_path / "model.pt")  # the pickle is read, no tensor
    assert mv.detect(tmp_path, {}) is mv.FLUX2
    assert mv.detect(tmp_path, {"model": {"stack": "ovis_u1"}}) is mv.OVIS_U1  # train_config.yaml comes first


def test_demo_loader_and_export_follow_the_registration(standin, tmp_path):
    pytest.importorskip("torch")
    from quantize.variants import detect_variant, export_components, load_policy, text_encoder_components, write_demo

    out = write_demo(f"{STANDIN}-tiny", tmp_path / "demo")
    assert yaml.safe_load((out / "train_config.yaml").read_text())["edge"]["variant"] == STANDIN
    assert detect_variant(out) == STANDIN
    loaded = load_policy(out)  # the loader the record names
    assert set(export_components(STANDIN, loaded)) == {"vision_encoder", "prefill", "denoise_step"}
    assert set(export_components(STANDIN, loaded, text_encoder=True)) == {"vision_encoder", "prefill", "denoise_step",
                                                                          "text_encoder"}
    assert set(text_encoder_components(STANDIN, loaded)) == {"text_encoder"}
    with pytest.raises(ConfigError, match="unknown model variant 'omnigen2'"):
        export_components("omnigen2", loaded)
    with pytest.raises(ConfigError, match="unknown model size 'omnigen2-tiny'"):
        write_demo("omnigen2-tiny", tmp_path / "x")
    with pytest.raises(CheckpointError, match="only apply to the real-size demos"):
        write_demo(f"{STANDIN}-tiny", tmp_path / "y", double_blocks=1)
    from quantize.demo import write_demo_checkpoint  # a writer asked for a size its record does not give it

    with pytest.raises(ConfigError, match=r"'ovis-u1-tiny' is not written by quantize.demo:write_demo_checkpoint "
                                          r"\(it writes \['flux2-tiny', 'omnigen2-standin-tiny'\]\)"):
        write_demo_checkpoint(tmp_path / "z", variant="ovis-u1-tiny")
