"""AckHold + replay_horizon: records are acked only when a restart from the first unacked one loses nothing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.ack_hold import AckHold, replay_horizon
from pipeline.core.bars.aggregator import BarAggregator
from pipeline.records.bars import BAR_DTYPE
from pipeline.records.ticks import TICK_DTYPE

pytestmark = pytest.mark.unit

T0 = 1_795_407_300  # a 15-minute boundary


def test_release_in_lane_order_per_group_horizon() -> None:
    hold: AckHold[str] = AckHold()
    hold.add(0, "n1", "NIFTY", 100)
    hold.add(0, "b1", "BANK", 50)
    hold.add(0, "bad", None, None)
    hold.add(1, "b2", "BANK", 55)
    horizons = {"NIFTY": 100, "BANK": 60}
    assert hold.release(horizons.get) == ["b2"]  # lane 0 waits for n1 (its ticks reach the open bucket)
    assert hold.held() == 3
    horizons["NIFTY"] = 101
    assert hold.release(horizons.get) == ["n1", "b1", "bad"]
    assert hold.held() == 0


def test_bad_records_and_nothing_open_are_safe_at_once() -> None:
    hold: AckHold[str] = AckHold()
    hold.add("p", "bad", None, None)
    hold.add("p", "x", "NIFTY", 10**12)
    assert hold.release(lambda group: None) == ["bad", "x"]


def test_horizon_asked_once_per_group_and_release() -> None:
    calls: list[str] = []
    hold: AckHold[int] = AckHold()
    for lane in range(3):
        hold.add(lane, lane, "NIFTY", 5)

    def horizon(group: str) -> int:
        calls.append(group)
        return 5

    assert hold.release(horizon) == []
    assert calls == ["NIFTY"]


def test_forget_drops_revoked_lanes() -> None:
    hold: AckHold[str] = AckHold()
    hold.add(0, "a", "NIFTY", 100)
    hold.add(1, "b", "NIFTY", 100)
    assert hold.forget([0, 7]) == 1
    assert hold.release(lambda group: None) == ["b"]


def _ticks(seconds, tokens, recv0: int, price0: float = 100.0) -> np.ndarray:
    rows = [(t, s) for s in seconds for t in tokens]
    out = np.zeros(len(rows), TICK_DTYPE)
    out["instrument_token"] = [t for t, _ in rows]
    out["exchange_ts"] = [T0 + s for _, s in rows]
    out["recv_ts"] = recv0 + np.arange(len(rows))
    out["last_price"] = price0 + np.arange(len(rows)) % 7
    out["volume"] = 1000 + 10 * out["recv_ts"] - 10 * recv0
    out["bid"] = out["ask"] = np.nan
    return out


def test_oldest_open_bucket_and_replay_from() -> None:
    agg = BarAggregator(60, lambda bars: None, grace_s=2)
    assert agg.oldest_open_bucket() is None and agg.replay_from() is None
    agg.add_ticks(_ticks(range(0, 59), (1,), 1))
    assert agg.oldest_open_bucket() == T0 and agg.replay_from() == T0
    agg.add_ticks(_ticks(range(60, 63), (1,), 100))  # watermark 62: bucket T0 closes
    assert agg.oldest_open_bucket() == T0 + 60
    assert agg.replay_from() == T0 + 58  # the volume baseline of the open bar: the last closed tick
    agg.add_ticks(_ticks([200], (1,), 200))  # T0+60 and T0+120 close; the baseline (T0+62) is too old to wait for
    assert agg.oldest_open_bucket() == T0 + 180 and agg.replay_from() == T0 + 180
    agg.flush()
    assert agg.oldest_open_bucket() is None and agg.replay_from() is None


def test_replay_horizon_is_the_oldest_of_the_intervals() -> None:
    aggs = [BarAggregator(i, lambda bars: None) for i in (60, 300, 900)]
    assert replay_horizon(aggs) is None
    for a in aggs:
        a.add_ticks(_ticks(range(0, 400, 5), (1, 2), 1))
    assert replay_horizon(aggs) == T0  # the 15-minute bucket is still open


class _Store:
    """The bars upsert of sinks.timescale_writer: newer last_recv_ts wins; equal: more (or as many) ticks win."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, int, int], np.void] = {}

    def write(self, bars: np.ndarray) -> None:
        for bar in bars:
            key = (int(bar["interval_s"]), int(bar["instrument_token"]), int(bar["bucket"]))
            old = self.rows.get(key)
            if old is None or (bar["last_recv_ts"], bar["tick_count"]) >= (old["last_recv_ts"], old["tick_count"]):
                self.rows[key] = bar.copy()


def _run(records: list[np.ndarray], store: _Store, hold: AckHold | None = None,
         intervals: tuple[int, ...] = (60, 300, 900)) -> list[int]:
    """Feed records to fresh aggregators writing to ``store``; returns the acked record indexes."""
    aggs = [BarAggregator(i, store.write, grace_s=2, late_window_s=300) for i in intervals]
    acked: list[int] = []
    for i, record in records:
        for a in aggs:
            a.add_ticks(record)
        if hold is not None:
            hold.add("p0", i, "NIFTY", int(record["exchange_ts"].max()))
            acked += hold.release(lambda group: replay_horizon(aggs))
    return acked


def _assert_same(store: _Store, ref: _Store) -> None:
    assert store.rows.keys() == ref.rows.keys()
    for key, bar in ref.rows.items():
        got = store.rows[key]
        for name in BAR_DTYPE.names:
            assert got[name] == bar[name] or (np.isnan(got[name]) and np.isnan(bar[name])), (key, name)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 4), st.booleans()), min_size=5, max_size=80),
    crash=st.floats(0, 1),
)
def test_restart_from_first_unacked_record_gives_the_uninterrupted_bars(steps, crash) -> None:
    """Kill the worker after any record, restart fresh from the first unacked record: the stored bars equal
    those of a run without the restart (bars the uninterrupted run closed)."""
    records, sec, recv = [], 0, 1
    for gap, width, both in steps:
        sec += gap
        tokens = (1, 2) if both else (1,)
        rec = _ticks(range(sec, sec + width), tokens, recv)
        recv += len(rec)
        sec += width - 1
        records.append((len(records), rec))
    ref = _Store()
    _run(records, ref)

    k = int(crash * len(records))
    store = _Store()
    acked = _run(records[:k], store, AckHold())
    assert acked == list(range(len(acked)))  # in order
    _run(records[len(acked):], store)  # the restarted worker: fresh state, replay from the first unacked record

    _assert_same(store, ref)


def test_restart_without_the_hold_loses_ticks() -> None:
    """The failure the hold prevents: ack on processing -> the replay misses the open bucket's first ticks."""
    records = [(i, _ticks(range(10 * i, 10 * i + 10), (1,), 1 + 10 * i)) for i in range(20)]
    ref, store = _Store(), _Store()
    _run(records, ref)
    _run(records[:9], store)  # acked all 9 (seconds 0..89): bucket T0+60 was open
    _run(records[9:], store)
    assert ref.rows[(60, 1, T0 + 60)]["tick_count"] == 60
    assert store.rows[(60, 1, T0 + 60)]["tick_count"] == 30


def test_restart_keeps_the_volume_baseline_of_the_open_bar() -> None:
    """Records aligned on bucket starts: the record holding the open bar's volume baseline (the previous
    bucket's last tick) is held too, so the replayed bar's volume counts its first tick's increment."""
    records = [(i, _ticks(range(10 * i, 10 * i + 10), (1,), 1 + 10 * i)) for i in range(20)]
    ref, store = _Store(), _Store()
    _run(records, ref, intervals=(60,))
    acked = _run(records[:9], store, AckHold(), intervals=(60,))  # seconds 0..89: T0 closed, T0+60 open
    assert acked == list(range(5))  # record 5 (seconds 50..59) holds the baseline of bucket T0+60
    _run(records[5:], store, intervals=(60,))
    _assert_same(store, ref)
