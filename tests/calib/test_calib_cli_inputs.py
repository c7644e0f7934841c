"""The `calibrate` steps blame a missing image folder by name, with the fix, before anything that would have come
from it (the board and serial of its session file)."""
from __future__ import annotations

import pytest

edge_cli = pytest.importorskip("edge.cli")
SPEC = "charuco:9,6,0.035,0.026,DICT_5X5_100"


def _error(capsys, *argv) -> str:
    assert edge_cli.main(["calibrate", *argv]) == 1
    return capsys.readouterr().err


def test_intrinsics_with_a_missing_images_folder_names_the_folder_not_the_board(tmp_path, capsys):
    missing = tmp_path / "no_such_views"
    err = _error(capsys, "intrinsics", "--images", str(missing), "--out", str(tmp_path / "i.yaml"))
    assert f"--images {missing}: no such folder" in err
    assert f"imagewam-edge calibrate capture --out {missing}" in err  # the fix
    assert "--board" not in err and not (tmp_path / "i.yaml").exists()


def test_the_other_steps_name_a_missing_images_folder_too(tmp_path, capsys):
    missing = str(tmp_path / "gone")
    intr = tmp_path / "i.yaml"
    intr.write_text("not read: the folder is checked first")
    for argv in (["handeye", "--images", missing, "--intrinsics", str(intr), "--mode", "eye-in-hand"],
                 ["verify", "--images", missing, "--intrinsics", str(intr)],
                 ["extrinsics", "--images", missing, str(tmp_path), "--intrinsics", str(intr), str(intr),
                  "--board", SPEC, "--out", str(tmp_path / "e.yaml")]):
        assert f"--images {missing}: no such folder" in _error(capsys, *argv), argv
