import pytest

from pipeline.feed.quiet_clock import QuietClock

pytestmark = pytest.mark.unit


def test_quiet_underlying_gets_the_newest_exchange_time_plus_the_wall_seconds_since() -> None:
    clock = QuietClock(quiet_s=2.0)
    assert clock.due(now=100.0, feed_alive=True) == []  # nothing seen yet: no clock to tell
    clock.ticked(["NIFTY", "BANKNIFTY"], exchange_ts=1_000, now=100.0)
    assert clock.due(now=101.0, feed_alive=True) == []  # not quiet yet
    clock.ticked(["BANKNIFTY"], exchange_ts=1_001, now=101.0)
    assert clock.due(now=102.5, feed_alive=True) == [("NIFTY", 1_002)]
    assert clock.due(now=102.9, feed_alive=True) == []  # the estimate has not moved: nothing new to say
    assert clock.due(now=103.6, feed_alive=True) == [("NIFTY", 1_003), ("BANKNIFTY", 1_003)]


def test_no_clock_while_the_feed_is_dead() -> None:
    clock = QuietClock(quiet_s=1.0)
    clock.ticked(["NIFTY"], exchange_ts=5_000, now=0.0)
    assert clock.due(now=30.0, feed_alive=False) == []  # an outage is not a quiet market
    assert clock.due(now=31.0, feed_alive=True) == [("NIFTY", 5_031)]


def test_a_tick_resets_the_quiet_period() -> None:
    clock = QuietClock(quiet_s=2.0)
    clock.ticked(["NIFTY"], exchange_ts=10, now=0.0)
    clock.ticked(["NIFTY"], exchange_ts=12, now=1.9)
    assert clock.due(now=3.0, feed_alive=True) == []
    assert clock.due(now=4.0, feed_alive=True) == [("NIFTY", 14)]
