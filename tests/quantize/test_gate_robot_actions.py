"""The accuracy gate compares what the robot receives (un-normalised, post-processed actions), not only the
normalised actions: a quantized engine that flips the LIBERO gripper fails however small its normalised error."""
import dataclasses

import numpy as np
import pytest

from edge.backends.host_loop import RunOnly
from edge.engines import load_engine_policy
from quantize.gate import compare_policies, format_report, robot_action_errors
from quantize.ptq import synthetic_observations

DELTA = 0.02  # added to the gripper velocity at every step: the final normalised gripper moves by -DELTA
SEED = 1000  # compare_policies' default: observation i is sampled with noise seed SEED + i


def _perturbed_pair(demo_engines, threshold_at):
    """(reference, "quantized") engine policies sharing one action normaliser whose gripper threshold (g = 0.5,
    where 2g-1 changes sign) sits at normalised value `threshold_at`; the quantized one's denoise step adds DELTA
    to the gripper velocity, a small normalised error."""
    ref, test = load_engine_policy(demo_engines), load_engine_policy(demo_engines)
    norm = ref.action_norm
    offset = norm.offset.copy()
    offset[-1] = threshold_at - 0.5 * norm.scale[-1]  # backward: g = (y - offset) / scale = 0.5 at y = threshold_at
    ref.action_norm = test.action_norm = dataclasses.replace(norm, offset=offset)
    run = test.backend.run

    def perturbed(component, inputs):
        out = run(component, inputs)
        if component == "denoise_step":
            out = dict(out)
            v = np.array(out["velocity"], copy=True)
            v[..., -1] += DELTA
            out["velocity"] = v
        return out

    view = RunOnly(test.backend)  # every component call goes through run(), the perturbed denoise step too
    view.run = perturbed
    test.backend = view
    return ref, test


@pytest.fixture(scope="module")
def held_out(demo_engines):
    return synthetic_observations(2, load_engine_policy(demo_engines), seed=7)


def test_gate_fails_on_a_flipped_gripper_although_the_normalised_error_is_small(demo_engines, held_out):
    fp32 = load_engine_policy(demo_engines)
    y = fp32.infer(held_out[0].as_obs(), seed=SEED)["actions_normalized"][0, -1]  # first gripper command
    ref, test = _perturbed_pair(demo_engines, threshold_at=float(y) - DELTA / 2)  # the quantized value crosses it
    report = compare_policies(ref, test, held_out, "int8")
    failed = {c["check"] for c in report["checks"] if not c["passed"]}
    assert failed == {"binarised action sign flips (gripper)"}, report["checks"]  # every normalised check passes
    assert not report["passed"]
    assert report["metrics"]["control_step"]["actions"]["mean_abs"] < 0.01
    robot = report["metrics"]["control_step"]["robot_actions"]
    assert robot["binary_dims"] == [6] and robot["flips"] >= 1 and robot["flips_per_dim"]["6"] == robot["flips"]
    assert {"observation": 0, "step": 0, "dim": 6} == {k: robot["flip_examples"][0][k] for k in ("observation", "step", "dim")}
    assert robot["max_abs_per_dim"][6] == pytest.approx(2.0) and robot["worst_dim"] == 6  # -1 <-> +1
    assert 0 < max(robot["max_abs_per_dim"][:6]) < 0.05  # the joints moved a little (x feeds the next step)
    text = format_report(report)
    assert "FAILED" in text and "FLIPPED: observation 0, step 0, dim 6" in text
    assert f"binarised: {robot['flips']} of 32 commands flipped" in text


def test_gate_passes_the_same_small_error_when_no_gripper_flips(demo_engines, held_out):
    ref, test = _perturbed_pair(demo_engines, threshold_at=100.0)  # far from every normalised gripper value
    report = compare_policies(ref, test, held_out, "int8")
    assert report["passed"], report["checks"]
    robot = report["metrics"]["control_step"]["robot_actions"]
    assert robot["flips"] == 0 and len(robot["max_abs_per_dim"]) == 7
    assert "binarised action sign flips (gripper)" in {c["check"] for c in report["checks"]}
    text = format_report(report)
    assert "PASSED" in text and "worst |error| per dimension in robot units" in text and "dim  6" in text


def test_robot_action_errors_in_robot_units():
    ref = [np.array([[0.10, -0.20, 1.0], [0.30, 0.00, -1.0]], np.float32)]
    q = [np.array([[0.15, -0.20, 1.0], [0.30, 0.25, 1.0]], np.float32)]
    out = robot_action_errors(ref, q, (2,))
    assert out["max_abs_per_dim"] == pytest.approx([0.05, 0.25, 2.0])
    assert out["flips"] == 1 and out["flip_examples"] == [{"observation": 0, "step": 1, "dim": 2, "reference": -1.0,
                                                           "quantized": 1.0}]
    assert robot_action_errors(ref, ref, ())["flips"] == 0
