"""Frame pacing of the rendering cameras: a reader that falls behind gets the current frame, not a burst of old ones."""
import time

from drivers.camera.pacing import FramePacer


def test_late_reader_skips_missed_periods_instead_of_bunching():
    pacer = FramePacer(fps=100.0)  # 10 ms periods
    pacer.start()
    pacer.wait(1.0)  # the first deadline is now
    time.sleep(0.055)  # the reader stalls for more than 5 periods
    before = time.monotonic()
    missed = pacer.wait(1.0)
    assert missed >= 4  # the stale frames are skipped ...
    assert pacer.next > before  # ... and the next deadline lies ahead: no burst of catch-up frames


def test_deadline_beyond_timeout_is_no_frame():
    pacer = FramePacer(fps=2.0)  # 500 ms periods
    pacer.start()
    assert pacer.wait(1.0) == 0
    t = time.monotonic()
    assert pacer.wait(0.02) is None  # the next deadline is ~0.5 s away: no frame within 20 ms
    assert time.monotonic() - t >= 0.02
