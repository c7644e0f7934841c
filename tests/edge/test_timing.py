import math

import numpy as np
import pytest

from edge.timing import StageTimes, Ticker, jitter, next_deadline, percentiles, summarize


def test_next_deadline_on_time_and_late():
    assert next_deadline(1.0, 0.01, 1.005) == (pytest.approx(1.01), 0)
    # work ended at 1.035: deadlines 1.01, 1.02, 1.03 were missed -> next is 1.04, 3 missed
    d, missed = next_deadline(1.0, 0.01, 1.035)
    assert d == pytest.approx(1.04) and missed == 3
    # exactly on the next deadline counts as missed (the tick could not start on time)
    assert next_deadline(0.0, 0.5, 0.5) == (pytest.approx(1.0), 1)
    with pytest.raises(ValueError):
        next_deadline(0.0, 0.0, 1.0)
    with pytest.raises(ValueError):
        next_deadline(0.0, float("nan"), 1.0)


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def test_ticker_overrun_accounting_whole_periods():
    clk = FakeClock()
    tk = Ticker(0.01, clock=clk, sleep=clk.sleep, spin_s=0.0)
    tk.start()
    starts = []
    work = [0.002, 0.002, 0.025, 0.002, 0.011, 0.002]  # two overruns: 2.5 periods and 1.1 periods
    for w in work:
        tk.wait()
        starts.append(clk())
        clk.t += w
        tk.done()
    assert tk.ticks == 6 and tk.overruns == 2
    assert tk.missed == 2 + 1  # 0.025 s of work skipped 2 deadlines, 0.011 s skipped 1
    # every tick starts on a whole period after the first: no catch-up burst, no drift
    offsets = (np.asarray(starts) - starts[0]) / 0.01
    assert np.allclose(offsets, np.round(offsets), atol=1e-9)
    assert list(np.round(offsets).astype(int)) == [0, 1, 2, 5, 6, 8]


def test_ticker_real_time_keeps_rate():
    tk = Ticker(0.005)
    tk.start()
    late = []
    for _ in range(40):
        late.append(tk.wait())
        tk.done()
    assert tk.ticks == 40
    assert min(late) >= -1e-4  # never early
    assert np.percentile(late, 50) < 0.002


def test_percentiles_and_summaries():
    a = np.arange(1, 101, dtype=float)
    p = percentiles(a)
    assert p["p50"] == pytest.approx(50.5) and p["p99"] == pytest.approx(99.01)
    assert all(math.isnan(v) for v in percentiles([]).values())
    s = summarize(a)
    assert s["n"] == 100 and s["mean"] == pytest.approx(50.5) and s["max"] == 100
    assert summarize([])["p50"] is None
    j = jitter([10.0, 10.0, 10.0, 20.0])
    assert j["std"] > 0 and j["p99_minus_p50"] == pytest.approx(9.7)
    st = StageTimes(maxlen=3)
    for v in (1, 2, 3, 4):
        st.add("x", v)
    assert list(st.samples("x")) == [2, 3, 4]  # bounded buffer keeps the newest
    assert set(st.summary()["x"]) == {"p50", "p90", "p99"}
