"""The embedded default runs the trained toy-task checkpoint (exported on first use into a temporary cache) and reports
the task's success; the closed-loop part of the quantization gate."""
import dataclasses

import pytest

from edge.config import from_yaml
from edge.default import DEFAULT_CONFIG, DEFAULT_INSTRUCTION


def test_embedded_default_does_the_task_and_says_so(sim_engines, tmp_path):
    from edge.commands_loop import format_summary
    from edge.runtime import run_config

    cfg = from_yaml(DEFAULT_CONFIG)
    cfg = dataclasses.replace(cfg, fault=dataclasses.replace(cfg.fault, dump_dir=str(tmp_path / "faults")),
                              arms=(dataclasses.replace(cfg.arms[0], link={"timeout_s": 0.2}),))  # a busy CI machine
    s = run_config(cfg, seconds=7.0)
    assert s["fault"] is None
    task = s["task"]
    assert task["instruction"] == DEFAULT_INSTRUCTION and task["seed"] == 0 and task["frames"] > 100
    assert s["arm_travel_max"] > 0.05  # the trained policy moves the arm
    line = f"task: '{DEFAULT_INSTRUCTION}': " + ("SUCCESS after" if task["success"] else "not reached")
    assert line in format_summary(s)  # reported either way (the shipped policy: 100/100 held-out kinematic episodes;
    # a 7 s run on a busy machine may still end before the 0.3 s hold)


def test_closed_loop_compare_of_identical_engines_agrees(sim_engines):
    from quantize.closed_loop import closed_loop_compare, format_closed_loop

    r = closed_loop_compare(sim_engines, {"same": sim_engines}, episodes=8, seed=0, kinematic=True)
    assert r["passed"] and r["success"]["fp32"] == r["success"]["same"]
    assert [x["success"] for x in r["evaluations"]["fp32"]["results"]] == \
        [x["success"] for x in r["evaluations"]["same"]["results"]]  # same seeds, same noise: same episodes
    assert "PASSED" in format_closed_loop(r)
    bad = closed_loop_compare(sim_engines, {"same": sim_engines}, episodes=8, seed=0, kinematic=True, tolerance=-0.5)
    assert not bad["passed"]


@pytest.mark.slow
def test_quantize_cli_with_the_closed_loop_check(sim_engines, tmp_path, capsys):
    from edge.cli import main

    rc = main(["quantize", "--engines", str(sim_engines), "--precision", "int8", "--synthetic", "12", "--out",
               str(tmp_path / "int8"), "--closed-loop-episodes", "3"])
    out = capsys.readouterr().out
    assert "closed-loop gate (closed-loop, 3 episodes from seed 0" in out
    assert rc in (0, 3)
