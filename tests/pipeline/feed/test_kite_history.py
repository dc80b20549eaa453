"""The historical client's pacing and windows (``pipeline.feed.kite_history``), with Kite's client replaced by a
recorder (pure unit: the real endpoint is exercised end to end in tests/agents/test_backfill.py)."""

import datetime as dt

import pytest
from kiteconnect.exceptions import InputException

from pipeline.feed.kite_history import MAX_WINDOW_S, HistoricalCandles, HistoricalError

pytestmark = pytest.mark.unit


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _client(answer) -> tuple[HistoricalCandles, list, _Clock]:  # noqa: ANN001
    clock, calls = _Clock(), []
    client = HistoricalCandles("k", "secret-token", "http://127.0.0.1:1", clock=clock.time, sleep=clock.sleep)

    def historical_data(token, since, until, interval, oi=False):  # noqa: ANN001, ANN202
        calls.append((clock.now, token, since, until, interval, oi))
        return answer(since)

    client.kite.historical_data = historical_data
    return client, calls, clock


def test_requests_are_spaced_within_three_per_second_and_long_ranges_split_into_60_day_windows() -> None:
    client, calls, _ = _client(lambda since: [])
    client.minute_candles(5, 0, 2 * MAX_WINDOW_S + 60)
    assert len(calls) == 3 and [c[4] for c in calls] == ["minute"] * 3 and all(c[5] for c in calls)
    gaps = [b[0] - a[0] for a, b in zip(calls, calls[1:])]
    assert all(g >= 1 / 3 for g in gaps)
    assert calls[0][2] == dt.datetime.fromtimestamp(0, dt.timezone(dt.timedelta(hours=5, minutes=30))).strftime(
        "%Y-%m-%d %H:%M:%S")


def test_candles_outside_the_range_are_dropped_and_converted_to_epoch_seconds() -> None:
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))
    rows = [{"date": dt.datetime.fromtimestamp(m, ist), "open": 1, "high": 2, "low": 0.5, "close": 1.5, "volume": 9,
             "oi": 4} for m in (1_000_020, 1_000_080, 1_000_140)]
    client, _, _ = _client(lambda since: rows)
    candles = client.minute_candles(7, 1_000_020, 1_000_140)
    assert candles["bucket"].tolist() == [1_000_020, 1_000_080] and set(candles["instrument_token"]) == {7}


def test_a_refused_request_is_one_error_naming_the_instrument_without_the_token() -> None:
    def refuse(since):  # noqa: ANN001, ANN202
        raise InputException("invalid token")

    client, _, _ = _client(refuse)
    with pytest.raises(HistoricalError) as info:
        client.minute_candles(42, 0, 60)
    assert "instrument 42" in str(info.value) and "invalid token" in str(info.value)
    assert "secret-token" not in str(info.value)
