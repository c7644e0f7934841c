import math

import numpy as np
import pytest

from edge.chunking import (Chunk, ChunkScheduler, chunk_position, ensemble_weights, fade_weight, sample_actions,
                           sample_chunk)


def ramp(h=16, a=2, scale=1.0, offset=0.0):
    return offset + scale * np.stack([np.arange(h, dtype=float)] * a, axis=1)  # actions[i] = offset + scale * i


def test_interpolation_between_actions_and_expiry():
    acts = ramp()
    assert np.allclose(sample_actions(acts, 0.0), 0)
    assert np.allclose(sample_actions(acts, 2.25), 2.25)  # linear between actions 2 and 3
    assert np.allclose(sample_actions(acts, -3.0), 0)  # before the chunk starts: its first action
    assert np.allclose(sample_actions(acts, 15.0), 15)
    assert sample_actions(acts, 15.01) is None  # ran out
    c = Chunk(acts, t0=10.0, dt=0.1)
    assert chunk_position(10.35, 10.0, 0.1) == pytest.approx(3.5)
    assert np.allclose(sample_chunk(c, 10.35), 3.5)  # latency compensation: time, not arrival, picks the action
    assert c.t_end == pytest.approx(11.5)


def test_fade_weight_is_smooth_ramp():
    assert fade_weight(0.0, 0.0, 0.1) == 0.0
    assert fade_weight(0.05, 0.0, 0.1) == pytest.approx(0.5)
    assert fade_weight(0.1, 0.0, 0.1) == 1.0
    assert fade_weight(5.0, 0.0, 0.0) == 1.0
    ts = np.linspace(0, 0.1, 101)
    w = np.array([fade_weight(t, 0.0, 0.1) for t in ts])
    assert np.all(np.diff(w) >= 0) and np.max(np.diff(w)) < 0.02  # monotone, no jump


def test_ensemble_weights_act_convention():
    w = ensemble_weights(3, 0.5)
    assert w.sum() == pytest.approx(1.0)
    assert w[0] > w[1] > w[2]  # m > 0: the oldest chunk weighs most (ACT)
    assert np.allclose(ensemble_weights(4, 0.0), 0.25)
    assert ensemble_weights(3, -0.5)[2] > ensemble_weights(3, -0.5)[0]


def test_crossfade_is_continuous_and_converges():
    s = ChunkScheduler(replan=8, blend="crossfade", blend_s=0.2)
    old = Chunk(ramp(offset=0.0), t0=0.0, dt=0.1)
    new = Chunk(ramp(offset=5.0), t0=0.5, dt=0.1)  # disagrees with the old chunk by 5 + (0.5 s of ramp)
    s.add(old, 0.0)
    before = s.target(0.8 - 1e-9)
    s.add(new, 0.8)
    at = s.target(0.8)
    assert np.allclose(at, before, atol=1e-6)  # no jump when a chunk arrives
    mid = s.target(0.9)
    o, n = sample_chunk(old, 0.9), sample_chunk(new, 0.9)
    assert np.allclose(mid, 0.5 * o + 0.5 * n)  # half way through the fade
    assert np.allclose(s.target(1.0), sample_chunk(new, 1.0))  # fully the new chunk after blend_s
    # sampled finely, the command never jumps by more than the ramp slope allows
    s2 = ChunkScheduler(replan=8, blend="crossfade", blend_s=0.2)
    s2.add(Chunk(ramp(offset=0.0), t0=0.0, dt=0.1), 0.0)
    vals = []
    for k, t in enumerate(np.arange(0.0, 1.4, 0.005)):
        if k == 160:  # t = 0.8
            s2.add(Chunk(ramp(offset=5.0), t0=0.5, dt=0.1), t)
        vals.append(s2.target(t)[0])
    steps = np.abs(np.diff(vals))
    assert steps.max() < 0.3, steps.max()  # a 5-unit disagreement is absorbed over 0.2 s (40 ticks)


def test_nested_fades_stay_continuous():
    s = ChunkScheduler(replan=4, blend="crossfade", blend_s=0.3)
    s.add(Chunk(ramp(offset=0.0), 0.0, 0.1), 0.0)
    s.add(Chunk(ramp(offset=3.0), 0.0, 0.1), 0.5)
    before = s.target(0.6)
    s.add(Chunk(ramp(offset=-4.0), 0.0, 0.1), 0.6)  # arrives in the middle of the previous fade
    assert np.allclose(s.target(0.6), before)
    assert np.allclose(s.target(0.9), ramp(offset=-4.0)[9])


def test_ensemble_blend_mixes_overlapping_chunks():
    s = ChunkScheduler(replan=8, blend="ensemble", ensemble_m=0.0)
    s.add(Chunk(np.zeros((16, 2)), 0.0, 0.1), 0.0)
    s.add(Chunk(np.ones((16, 2)) * 2, 0.5, 0.1), 0.6)
    assert np.allclose(s.target(0.7), 1.0)  # equal weights: the mean
    assert np.allclose(s.target(1.6), 2.0)  # the old chunk expired at t = 1.5


def test_hold_when_the_newest_chunk_runs_out():
    s = ChunkScheduler(replan=8)
    assert s.target(0.0) is None  # nothing yet: hold
    s.add(Chunk(ramp(), 0.0, 0.1), 0.05)
    assert s.target(1.5) is not None
    assert s.target(1.51) is None  # horizon 16 at 10 Hz ends at 1.5 s: hold, never extrapolate


def test_replan_request_accounts_for_latency():
    s = ChunkScheduler(replan=10, blend="none")
    assert s.due(0.0)
    s.add(Chunk(ramp(), t0=0.0, dt=0.1), now=0.3)  # latency 0.3 s = 3 actions
    assert s.latency_s == pytest.approx(0.3)
    assert not s.due(0.65)  # position 6.5 < 10 - 3
    assert s.due(0.701)  # position 7 = replan - latency: ask now so the next chunk lands at action 10
    with pytest.raises(ValueError):
        ChunkScheduler(replan=0)
    with pytest.raises(ValueError):
        ChunkScheduler(replan=5, blend="average")
