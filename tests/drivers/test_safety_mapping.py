from __future__ import annotations

import math

import numpy as np
import pytest

from drivers.arm.mapping import JointCalibration, JointMapping
from drivers.arm.safety import EStopLatch, SafetyLimits, check_finite, clip_command
from drivers.errors import ConfigError, EStopError, SafetyError


def test_clip_position_step_and_velocity():
    lim = SafetyLimits.create(3, lower=[-1, -1, 0], upper=[1, 1, 1], max_velocity=1.0, max_step=0.5)
    q, notes = clip_command([2.0, -0.2, 0.5], None, lim)
    np.testing.assert_allclose(q, [1.0, -0.2, 0.5])
    assert "position limit on joints [0]" in notes[0]
    q, notes = clip_command([1.0, -1.0, 1.0], [0.0, 0.0, 0.9], lim)
    np.testing.assert_allclose(q, [0.5, -0.5, 1.0])  # max_step 0.5 from present
    q, _ = clip_command([1.0, -1.0, 1.0], [0.0, 0.0, 0.9], lim, dt=0.01)
    np.testing.assert_allclose(q, [0.01, -0.01, 0.91])  # velocity 1/s over 10 ms


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_commands_are_rejected(bad):
    lim = SafetyLimits.create(2)
    with pytest.raises(SafetyError, match=r"non-finite values at joint index\(es\) \[1\]"):
        clip_command([0.0, bad], None, lim)
    with pytest.raises(SafetyError, match="present position"):
        clip_command([0.0, 0.0], [bad, 0.0], lim)
    with pytest.raises(SafetyError, match="dt"):
        clip_command([0.0, 0.0], [0.0, 0.0], lim, dt=bad)
    with pytest.raises(SafetyError, match="1-D"):
        check_finite([[0.0]])


def test_limits_validation():
    with pytest.raises(ConfigError, match="lower > upper"):
        SafetyLimits.create(2, lower=1, upper=0)
    with pytest.raises(ConfigError, match="3 values for 2 joints"):
        SafetyLimits.create(2, lower=[0, 0, 0])
    with pytest.raises(ConfigError, match="finite"):
        SafetyLimits.create(1, upper=math.nan)
    with pytest.raises(ConfigError, match="unknown field"):
        SafetyLimits.from_dict({"max_speed": 1}, 2)


def test_estop_latch():
    latch = EStopLatch()
    latch.check()
    latch.trip("button")
    latch.trip("second reason is ignored")
    with pytest.raises(EStopError, match="button"):
        latch.check()
    latch.clear()
    latch.check()


def test_mapping_round_trip_direction_offset_gripper():
    m = JointMapping([JointCalibration(id=1, offset=3000, direction=-1),
                      JointCalibration(id=7, kind="gripper", gripper_open=1500, gripper_closed=2500)])
    raw = m.to_raw([math.pi / 2, 0.25])
    assert raw.tolist() == [3000 - 1024, 1750]
    np.testing.assert_allclose(m.to_units(raw), [math.pi / 2, 0.25])
    assert m.to_raw([10.0, 2.0]).tolist() == [0, 3500]  # clipped to the raw range
    lo, hi = m.limits_in_units()
    assert lo[1] == pytest.approx(-1.5) and hi[1] == pytest.approx(2.595, abs=1e-3)
    m2 = JointMapping.from_dict(m.to_dict())
    assert m2.ids == [1, 7]
    with pytest.raises(ConfigError, match=r"unknown field `joints\[0\].offest` \(did you mean `offset`"):
        JointMapping.from_dict({"joints": [{"id": 1, "offest": 3}]})
    with pytest.raises(ConfigError, match="duplicate ids"):
        JointMapping.default([1, 1])
    with pytest.raises(ConfigError, match="direction"):
        JointCalibration(id=1, direction=2)
