"""A camera layout that is not a preset, declared once in the checkpoint's train_config (`edge.canvas`), carried
through export into policy.json and used by the torch-free runtime."""
import shutil

import numpy as np
import pytest
import yaml

from edge.errors import ConfigError
from edge.transforms import canvas_from_dict, compose_canvas, get_canvas

LAYOUT = {"name": "top-and-two-wrists", "height": 224, "width": 320,
          "slots": [{"name": "front", "x": 0, "y": 0, "width": 224, "height": 224},
                    {"name": "left_wrist", "x": 224, "y": 0, "width": 96, "height": 112, "fit": "stretch"},
                    {"name": "right_wrist", "x": 224, "y": 112, "width": 96, "height": 112, "rotate180": True}]}


def test_a_declared_layout_composes_the_cameras():
    canvas = get_canvas(LAYOUT)
    assert canvas.token_grid == (14, 20) and [s.name for s in canvas.slots] == ["front", "left_wrist", "right_wrist"]
    images = [np.full((480, 640, 3), v, np.uint8) for v in (10, 20, 30)]
    out = compose_canvas(images, canvas)
    assert out.shape == (224, 320, 3)
    assert out[0, 0, 0] == 10 and out[0, 224, 0] == 20 and out[200, 300, 0] == 30


@pytest.mark.parametrize("change, message", [
    ({"width": 300}, "multiples of 16"),
    ({"slots": LAYOUT["slots"][:1] + [{**LAYOUT["slots"][1], "x": 200}]}, "overlap"),
    ({"slots": LAYOUT["slots"][:1] + [{**LAYOUT["slots"][1], "y": 150}]}, "reaches outside"),
    ({"slots": LAYOUT["slots"][:1] + [{**LAYOUT["slots"][1], "name": "front"}]}, "distinct"),
    ({"slots": [{**LAYOUT["slots"][0], "fit": "squash"}]}, "crop or stretch"),
    ({"slots": [{"name": "front", "x": 0}]}, "needs name, x, y, width, height"),
])
def test_a_bad_layout_is_refused_naming_the_field(change, message):
    with pytest.raises(ConfigError, match=message):
        canvas_from_dict({**LAYOUT, **change}, where="train_config.yaml edge.canvas")


def test_the_layout_goes_from_the_checkpoint_through_export_to_the_runtime(demo_checkpoint, tmp_path):
    from edge.engines import load_engine_policy
    from quantize.export import export_checkpoint

    ckpt = tmp_path / "ckpt"
    shutil.copytree(demo_checkpoint, ckpt)
    cfg = yaml.safe_load((ckpt / "train_config.yaml").read_text())
    cfg.setdefault("edge", {})["canvas"] = LAYOUT
    (ckpt / "train_config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = export_checkpoint(ckpt, tmp_path / "engines", instructions=["pick up the red block"])["out"]
    policy = load_engine_policy(out)
    assert policy.canvas.name == "top-and-two-wrists" and policy.spec.canvas == LAYOUT
    obs = {"images": [np.full((240, 320, 3), 90, np.uint8)] * 3, "state": np.zeros(8),
           "instruction": "pick up the red block"}
    assert np.isfinite(policy.infer(obs, seed=0)["actions"]).all()
    with pytest.raises(ConfigError, match="takes 3 camera image"):
        policy.infer({**obs, "images": obs["images"][:2]}, seed=0)
