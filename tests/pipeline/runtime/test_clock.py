import pytest

from pipeline.runtime.clock import SYSTEM_CLOCK, ManualClock

pytestmark = pytest.mark.unit


def test_manual_clock_moves_only_when_told() -> None:
    clock = ManualClock(100.0)
    assert clock.time() == clock.monotonic() == 100.0
    clock.advance(2.5)
    assert clock.time() == clock.monotonic() == 102.5
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(-1)


def test_system_clock_reads_the_real_clocks() -> None:
    import time

    assert abs(SYSTEM_CLOCK.time() - time.time()) < 5
    assert SYSTEM_CLOCK.monotonic() <= time.monotonic()
