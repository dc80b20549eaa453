import orjson
import pytest

from sinks.redis.tick_watch import TickWatch

pytestmark = pytest.mark.unit


def _ticks(*pairs: tuple[int, int]) -> bytes:
    return orjson.dumps({"schema_version": 1, "underlying": "NIFTY",
                         "ticks": [{"token": t, "recv_ts": r} for t, r in pairs]})


def test_latency_is_now_minus_receive_time_only_while_measuring() -> None:
    watch = TickWatch("redis://unused")
    watch.on_message("ticks:NIFTY", _ticks((1, 1_000_000_000)), now=1000.5)  # not measuring: counted only
    watch.measuring = True
    watch.on_message("ticks:NIFTY", _ticks((1, 1_000_000_000 + 10), (2, 1_000_010_000)), now=1000.020)
    assert watch.ticks == 3 and watch.messages == 2
    lat = watch.latency_summary()
    assert lat["max"] == pytest.approx(20.0, abs=0.01) and lat["p50"] == pytest.approx(15.0, abs=0.01)


def test_a_tick_not_newer_than_one_seen_of_its_instrument_counts_as_back_in_time() -> None:
    watch = TickWatch("redis://unused")
    watch.on_message("ticks:NIFTY", _ticks((1, 500), (2, 600)), now=1.0)
    watch.on_message("ticks:NIFTY", _ticks((1, 400), (2, 600), (3, 100)), now=1.0)
    assert watch.backwards == 2


def test_fresh_times_and_gaps_per_channel_and_bar_keys() -> None:
    watch = TickWatch("redis://unused", fresh_s=1.0)
    for now in (10.0, 11.0, 15.0):
        watch.on_message("ticks:NIFTY", _ticks((1, int((now - 0.1) * 1e6))), now=now)
    watch.on_message("ticks:NIFTY", _ticks((1, int(10 * 1e6))), now=20.0)  # 10 s old: not fresh
    assert watch.fresh_at["ticks:NIFTY"] == [10.0, 11.0, 15.0]
    assert watch.longest_gap(10.0, 21.0) == {"ticks:NIFTY": 6.0}
    assert watch.back_after(11.5) == pytest.approx(3.5)
    watch.on_message("bars:1m:NIFTY", orjson.dumps({"interval_s": 60, "bars": [{"token": 7, "bucket": 120}]}), 1.0)
    assert watch.bar_keys == {(60, 7, 120)}
