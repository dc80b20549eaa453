"""BarAggregator against a plain per-tick reference implementation of docs/design.md's definitions."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.bars.aggregator import BarAggregator
from pipeline.records.bars import BAR_DTYPE
from pipeline.records.ticks import CLOSE_FIELDS, PRICED_TICK_DTYPE, TICK_DTYPE

pytestmark = pytest.mark.unit

IST = timezone(timedelta(hours=5, minutes=30))
T0915 = int(datetime(2026, 1, 5, 9, 15, tzinfo=IST).timestamp())  # a Monday, market open


# ---------------------------------------------------------------- reference


class Reference:
    """Slow, per tick, straight from the definitions (see BarAggregator's docstring)."""

    def __init__(self, interval_s: int, grace_s: float = 2.0, late_window_s: float = 300.0) -> None:
        self.interval = interval_s
        self.grace = grace_s
        self.late = max(late_window_s, grace_s)
        self.watermark: int | None = None
        self.flushed_upto: int | None = None
        self.newest_recv: dict[int, int] = {}
        self.accepted: list[dict] = []
        self.stats = {"ticks": 0, "duplicates": 0, "too_late_dropped": 0}

    def bucket(self, ex: int) -> int:
        return ex // self.interval * self.interval

    def add(self, ticks: np.ndarray) -> None:
        names = ticks.dtype.names
        for row in ticks:
            tick = {name: row[name].item() for name in names}
            for g in CLOSE_FIELDS:
                tick.setdefault(g, math.nan)
            self.stats["ticks"] += 1
            ex, tok, recv = tick["exchange_ts"], tick["instrument_token"], tick["recv_ts"]
            self.watermark = ex if self.watermark is None else max(self.watermark, ex)
            if tok in self.newest_recv and recv <= self.newest_recv[tok]:
                self.stats["duplicates"] += 1
            elif self.bucket(ex) + self.interval + self.late <= self.watermark:
                self.stats["too_late_dropped"] += 1
            else:
                self.accepted.append(tick)
                self.newest_recv[tok] = recv

    def flush(self) -> None:
        if self.accepted:
            top = max(self.bucket(t["exchange_ts"]) for t in self.accepted)
            self.flushed_upto = top if self.flushed_upto is None else max(self.flushed_upto, top)

    def closed(self, bucket: int) -> bool:
        if self.watermark is not None and bucket + self.interval + self.grace <= self.watermark:
            return True
        return self.flushed_upto is not None and bucket <= self.flushed_upto

    def bars(self) -> dict[tuple[int, int], dict]:
        """Bars of every closed bucket from all accepted ticks."""
        by_token: dict[int, list[dict]] = {}
        for t in self.accepted:
            by_token.setdefault(t["instrument_token"], []).append(t)
        out = {}
        for tok, ticks in by_token.items():
            ticks.sort(key=lambda t: (t["exchange_ts"], t["recv_ts"]))
            prev = None
            day = day_max = None
            groups: dict[int, list[tuple[dict, int, dict | None]]] = {}
            for t in ticks:
                # docs/design.md: cumulative volume per IST trading day; a value below the day's running
                # maximum is ignored (a dip never counts twice when it recovers)
                t_day = (t["exchange_ts"] + 19_800) // 86_400
                if t_day != day:
                    inc, day, day_max = 0, t_day, t["volume"]
                else:
                    inc = max(0, t["volume"] - day_max)
                    day_max = max(day_max, t["volume"])
                groups.setdefault(self.bucket(t["exchange_ts"]), []).append((t, inc, prev))
                prev = t
            for b, items in groups.items():
                if not self.closed(b):
                    continue
                prices = [t["last_price"] for t, _, _ in items]
                ois = [t["oi"] for t, _, _ in items]
                volume = sum(inc for _, inc, _ in items)
                pv = sum(t["last_price"] * inc for t, inc, _ in items if inc > 0)
                baseline = items[0][2]
                recvs = [t["recv_ts"] for t, _, _ in items] + ([baseline["recv_ts"]] if baseline else [])
                last = items[-1][0]
                bar = {
                    "instrument_token": tok,
                    "interval_s": self.interval,
                    "bucket": b,
                    "open": prices[0],
                    "high": max(prices),
                    "low": min(prices),
                    "close": prices[-1],
                    "volume": volume,
                    "oi": ois[-1],
                    "oi_open": ois[0],
                    "oi_high": max(ois),
                    "oi_low": min(ois),
                    "vwap": pv / volume if volume > 0 else math.nan,
                    "tick_count": len(items),
                    "last_recv_ts": max(recvs),
                }
                for g in CLOSE_FIELDS:
                    bar[g] = last[g]
                out[(tok, b)] = bar
        return out


# ---------------------------------------------------------------- helpers


class Sink:
    """Collects on_bars calls; ``table`` is what a newest-wins upsert on (token, bucket) holds."""

    def __init__(self) -> None:
        self.calls: list[np.ndarray] = []
        self.table: dict[tuple[int, int], np.void] = {}

    def __call__(self, bars: np.ndarray) -> None:
        assert bars.dtype == BAR_DTYPE
        assert len(bars) > 0
        keys = list(zip(bars["bucket"].tolist(), bars["instrument_token"].tolist()))
        assert keys == sorted(keys), "bars must be sorted by (bucket, instrument_token)"
        assert len(set(keys)) == len(keys), "one row per bar per call"
        self.calls.append(bars.copy())
        for row in bars:
            key = (int(row["instrument_token"]), int(row["bucket"]))
            old = self.table.get(key)
            if old is not None:
                # A re-emitted bar carries a newer version, or the same one when only its volume baseline's
                # running maximum moved (a late tick in an earlier bar): the upsert takes an equal version too.
                assert row["last_recv_ts"] >= old["last_recv_ts"], "a re-emitted bar must not carry an older version"
                if row["last_recv_ts"] == old["last_recv_ts"]:
                    assert row["tick_count"] == old["tick_count"] and row["close"] == old["close"], "only volume moves"
            self.table[key] = row.copy()

    def rows(self) -> list[np.void]:
        return [self.table[k] for k in sorted(self.table)]


def ticks(rows: list[tuple], dtype: np.dtype = PRICED_TICK_DTYPE) -> np.ndarray:
    """rows: (token, exchange_ts, recv_ts, last_price, cum_volume[, oi])."""
    out = np.zeros(len(rows), dtype)
    for i, r in enumerate(rows):
        tok, ex, recv, price, vol = r[:5]
        out[i]["instrument_token"] = tok
        out[i]["mode"] = 3
        out[i]["exchange_ts"] = ex
        out[i]["recv_ts"] = recv
        out[i]["last_price"] = price
        out[i]["volume"] = vol
        out[i]["oi"] = r[5] if len(r) > 5 else 0
        out[i]["bid"] = out[i]["ask"] = np.nan
    if dtype == PRICED_TICK_DTYPE:
        for j, g in enumerate(CLOSE_FIELDS):
            out[g] = out["last_price"] / 100 + j
    return out


def assert_matches_reference(sink: Sink, ref: Reference) -> None:
    expected = ref.bars()
    assert sorted(sink.table) == sorted(expected)
    keys = sorted(expected)
    got = np.array([sink.table[k] for k in keys], BAR_DTYPE)
    emitted: dict[tuple[int, int], int] = {}
    for call in sink.calls:
        for key in zip(call["instrument_token"].tolist(), call["bucket"].tolist()):
            emitted[key] = emitted.get(key, 0) + 1
    # the newest version is marked a correction exactly when it re-emits a bar
    assert [int(sink.table[k]["correction"]) for k in keys] == [int(emitted[k] > 1) for k in keys]
    names = [n for n in BAR_DTYPE.names if n != "correction"]
    want = np.array([tuple(expected[k][n] for n in names) + (0,) for k in keys], BAR_DTYPE)
    for name in names:
        if name == "vwap":  # summation order may differ from the reference's
            assert np.allclose(got[name], want[name], rtol=1e-12, atol=0, equal_nan=True), name
        else:
            assert np.array_equal(got[name], want[name], equal_nan=got.dtype[name].kind == "f"), name


def run(
    agg_args: dict,
    batches: list[np.ndarray],
    *,
    flush: bool = False,
    ref: Reference | None = None,
    check_every_batch: bool = True,
) -> Sink:
    """Feed the batches; with ``ref``, the sink's table must equal the reference after every batch."""
    sink = Sink()
    agg = BarAggregator(on_bars=sink, **agg_args)
    for batch in batches:
        agg.add_ticks(batch)
        if ref is not None:
            ref.add(batch)
            if check_every_batch:
                assert_matches_reference(sink, ref)
    if ref is not None:
        assert_matches_reference(sink, ref)
    if flush:
        agg.flush()
        if ref is not None:
            ref.flush()
            assert_matches_reference(sink, ref)
    if ref is not None:
        for k in ("ticks", "duplicates", "too_late_dropped"):
            assert agg.stats[k] == ref.stats[k], k
        assert agg.stats["bars_emitted"] == sum(len(c) for c in sink.calls)
    return sink


def same_bars(a: list[np.void], b: list[np.void]) -> bool:
    """Bit-identical bars (NaN == NaN); ``correction`` is emission history (it depends on the batch split), not
    the bar."""
    x, y = np.array(a, BAR_DTYPE), np.array(b, BAR_DTYPE)
    names = [n for n in BAR_DTYPE.names if n != "correction"]
    return len(x) == len(y) and all(np.array_equal(x[n], y[n], equal_nan=x.dtype[n].kind == "f") for n in names)


def split(arr: np.ndarray, rng: np.random.Generator, max_size: int) -> list[np.ndarray]:
    out, i = [], 0
    while i < len(arr):
        k = int(rng.integers(0, max_size + 1))  # empty batches too
        out.append(arr[i : i + k])
        i += k
    return out


def random_stream(rng: np.random.Generator, n: int, n_tokens: int, late_prob: float = 0.1) -> np.ndarray:
    """Receive-ordered ticks: event time mostly advancing, some stragglers, volume resets, redeliveries."""
    tokens = rng.choice(np.arange(100, 100 + 5 * n_tokens, 5), n_tokens, replace=False)
    cum = {int(t): int(rng.integers(0, 1000)) for t in tokens}
    clock = T0915 - int(rng.integers(0, 200))
    recv = 1_700_000_000_000_000
    rows: list[tuple] = []
    out: list[tuple] = []
    for _ in range(n):
        if out and rng.random() < 0.05:  # at-least-once: redeliver a recent run of ticks
            k = int(rng.integers(1, 6))
            out.extend(out[-k:])
            continue
        clock += int(rng.integers(0, 6))
        if rng.random() < 0.03:  # a feed gap: the watermark jumps over whole late windows in one tick
            clock += int(rng.choice([61, 125, 400, 1_900]))
        ex = clock
        if rng.random() < late_prob:
            ex -= int(rng.integers(1, 600))
        tok = int(rng.choice(tokens))
        if rng.random() < 0.02:
            cum[tok] = int(rng.integers(0, 20))  # new trading day
        else:
            cum[tok] += int(rng.choice([0, 0, 1, 5, 50]))
        recv += int(rng.integers(1, 1000))
        price = float(np.round(rng.uniform(10, 500), 2))
        rows.append((tok, ex, recv, price, cum[tok], int(rng.integers(0, 10_000))))
        out.append(rows[-1])
    return ticks(out)


# ---------------------------------------------------------------- properties


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("interval", [5, 60, 300])
def test_random_streams_match_reference_for_any_batch_split(seed: int, interval: int) -> None:
    rng = np.random.default_rng(seed * 1000 + interval)
    stream = random_stream(rng, 400, int(rng.integers(1, 8)))
    grace = float(rng.choice([0.0, 2.0, 3.5]))
    late = float(rng.choice([0.0, 30.0, 300.0, 900.0]))
    args = {"interval_s": interval, "grace_s": grace, "late_window_s": late}
    tables = []
    for max_size in (1, 7, 60, len(stream)):
        ref = Reference(interval, grace, late)
        sink = run(args, split(stream, rng, max_size), flush=True, ref=ref, check_every_batch=max_size == 7)
        tables.append(sink.rows())
    for other in tables[1:]:  # bit-identical final bars whatever the split
        assert same_bars(other, tables[0])


tick_steps = st.tuples(
    st.integers(0, 3),  # instrument
    # event clock advance; sometimes a feed gap that jumps over whole late windows in one tick, or a new day
    st.one_of(st.integers(0, 40), st.integers(0, 40), st.integers(0, 40), st.sampled_from([61, 125, 400, 1_900, 86_400])),
    st.one_of(st.just(0), st.just(0), st.integers(1, 700)),  # straggler: seconds behind the clock
    st.sampled_from([0, 0, 1, 7, 100]),  # volume traded since the instrument's previous tick
    st.booleans(),  # reset (with low weight via filter below)
    st.integers(1, 50),  # price
    st.one_of(st.none(), st.integers(1, 5)),  # redeliver the last k ticks instead
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(tick_steps, max_size=80),
    interval=st.sampled_from([1, 10, 60, 300, 900]),
    grace=st.sampled_from([0.0, 2.0, 2.5, 30.0]),
    late=st.sampled_from([0.0, 5.0, 120.0, 300.0]),
    cuts=st.lists(st.integers(0, 80), max_size=12),
    flush=st.booleans(),
)
def test_hypothesis_streams_match_reference_and_split_invariant(steps, interval, grace, late, cuts, flush) -> None:
    clock, recv = T0915 - 30, 10**15
    cum = [0, 1000, 5, 77]
    rows: list[tuple] = []
    for inst, adv, back, dvol, reset, price, redeliver in steps:
        if redeliver is not None and rows:
            rows.extend(rows[-redeliver:])
            continue
        clock += adv
        recv += 1
        cum[inst] = dvol if (reset and dvol == 7) else cum[inst] + dvol
        rows.append((9000 + inst, clock - back, recv, float(price), cum[inst], price * 3 % 17))
    stream = ticks(rows)
    args = {"interval_s": interval, "grace_s": grace, "late_window_s": late}
    bounds = sorted({0, len(stream), *[c for c in cuts if c <= len(stream)]})
    batches = [stream[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    by_split = run(args, batches, flush=flush, ref=Reference(interval, grace, late))
    whole = run(args, [stream], flush=flush)
    one_by_one = run(args, [stream[i : i + 1] for i in range(len(stream))], flush=flush)
    for sink in (whole, one_by_one):
        assert same_bars(sink.rows(), by_split.rows())


# ---------------------------------------------------------------- explicit cases


def test_tick_at_bucket_start_belongs_to_that_bucket_0915_ist() -> None:
    assert T0915 % 900 == 0  # 09:15 IST starts a 1, 5 and 15-minute bucket
    for interval in (60, 300, 900):
        sink = Sink()
        agg = BarAggregator(interval, sink, grace_s=0)
        agg.add_ticks(ticks([(1, T0915 - 1, 1, 10.0, 0), (1, T0915, 2, 11.0, 5), (1, T0915 + interval, 3, 12.0, 9)]))
        rows = sink.rows()
        assert [int(r["bucket"]) for r in rows] == [T0915 - interval, T0915]
        assert rows[1]["open"] == 11.0 and rows[1]["tick_count"] == 1 and rows[1]["interval_s"] == interval


def test_bucket_closes_only_after_grace_then_emits_once() -> None:
    sink = Sink()
    agg = BarAggregator(60, sink, grace_s=2.0)
    agg.add_ticks(ticks([(1, T0915 + 5, 1, 10.0, 0)]))
    agg.add_ticks(ticks([(1, T0915 + 61, 2, 11.0, 0)]))  # watermark 61 < 60 + 2
    assert sink.calls == []
    agg.add_ticks(ticks([(2, T0915 + 62, 3, 11.0, 0)]))  # another instrument moves the watermark
    assert len(sink.calls) == 1 and sink.calls[0]["bucket"].tolist() == [T0915]
    agg.add_ticks(ticks([(2, T0915 + 63, 4, 11.0, 0)]))
    assert len(sink.calls) == 1
    assert agg.stats["bars_emitted"] == 1


def test_tick_in_grace_period_joins_its_bar_not_a_correction() -> None:
    sink = Sink()
    agg = BarAggregator(60, sink, grace_s=2.0)
    agg.add_ticks(ticks([(1, T0915 + 5, 1, 10.0, 0), (1, T0915 + 61, 2, 11.0, 3), (1, T0915 + 59, 3, 12.0, 4)]))
    agg.add_ticks(ticks([(1, T0915 + 62, 4, 11.0, 5)]))
    (bar,) = sink.calls[0]
    assert bar["close"] == 12.0 and bar["tick_count"] == 2 and agg.stats["late_corrections"] == 0


def test_duplicate_redelivery_dropped_and_counted() -> None:
    batch = ticks([(1, T0915 + 1, 1, 10.0, 100), (1, T0915 + 2, 2, 12.0, 110), (2, T0915 + 3, 3, 5.0, 7)])
    sink = Sink()
    agg = BarAggregator(60, sink)
    agg.add_ticks(batch)
    agg.add_ticks(batch)  # at-least-once redelivery
    agg.add_ticks(batch[1:2])
    assert agg.stats["duplicates"] == 4 and agg.stats["ticks"] == 7
    agg.flush()
    rows = sink.rows()
    assert [r["tick_count"] for r in rows] == [2, 1]
    assert rows[0]["volume"] == 10


def test_duplicate_within_one_batch_dropped() -> None:
    batch = ticks([(1, T0915 + 1, 5, 10.0, 100), (1, T0915 + 2, 6, 12.0, 110), (1, T0915 + 1, 5, 10.0, 100)])
    sink = Sink()
    agg = BarAggregator(60, sink)
    agg.add_ticks(batch)
    agg.flush()
    assert agg.stats["duplicates"] == 1 and sink.rows()[0]["tick_count"] == 2


def test_late_tick_within_window_reemits_corrected_bar_with_newer_last_recv_ts() -> None:
    sink = Sink()
    agg = BarAggregator(60, sink, grace_s=2.0, late_window_s=300.0)
    agg.add_ticks(ticks([(1, T0915 + 10, 1, 10.0, 100), (1, T0915 + 20, 2, 11.0, 110), (1, T0915 + 70, 3, 9.0, 130)]))
    assert len(sink.calls) == 1  # 09:15 closed at 09:16:02
    agg.add_ticks(ticks([(2, T0915 + 125, 4, 1.0, 0)]))  # closes 09:16
    first = sink.table[(1, T0915)].copy()
    assert first["volume"] == 10 and first["last_recv_ts"] == 2
    agg.add_ticks(ticks([(1, T0915 + 30, 5, 20.0, 125)]))  # late: 09:15:30 arrives at watermark 09:17:05
    assert agg.stats["late_corrections"] == 1
    bars = sink.calls[-1]
    assert bars["bucket"].tolist() == [T0915, T0915 + 60]  # its bar and the next (its volume baseline moved)
    fixed = sink.table[(1, T0915)]
    assert fixed["last_recv_ts"] == 5 > first["last_recv_ts"]
    assert (fixed["high"], fixed["close"], fixed["tick_count"], fixed["volume"]) == (20.0, 20.0, 3, 25)
    assert fixed["vwap"] == pytest.approx((11.0 * 10 + 20.0 * 15) / 25)
    assert fixed["delta"] == pytest.approx(20.0 / 100 + 2)  # Greeks of the new last tick
    nxt = sink.table[(1, T0915 + 60)]
    assert nxt["volume"] == 130 - 125 and nxt["last_recv_ts"] == 5


def test_late_tick_not_last_of_bucket_reemits_only_its_bar() -> None:
    sink = Sink()
    agg = BarAggregator(60, sink, grace_s=0, late_window_s=300.0)
    agg.add_ticks(ticks([(1, T0915 + 10, 1, 10.0, 100), (1, T0915 + 50, 2, 11.0, 120), (1, T0915 + 70, 3, 9.0, 130)]))
    agg.add_ticks(ticks([(1, T0915 + 125, 4, 1.0, 140)]))
    agg.add_ticks(ticks([(1, T0915 + 30, 5, 30.0, 105)]))
    bars = sink.calls[-1]
    assert bars["bucket"].tolist() == [T0915]
    assert bars[0]["volume"] == 20 and bars[0]["close"] == 11.0 and bars[0]["high"] == 30.0
    assert bars[0]["vwap"] == pytest.approx((30.0 * 5 + 11.0 * 15) / 20)


def test_late_tick_for_bucket_without_bar_creates_it() -> None:
    sink = Sink()
    agg = BarAggregator(60, sink, grace_s=0, late_window_s=300.0)
    agg.add_ticks(ticks([(1, T0915 + 10, 1, 10.0, 100), (1, T0915 + 130, 2, 11.0, 120), (2, T0915 + 200, 3, 1.0, 0)]))
    assert set(sink.table) == {(1, T0915), (1, T0915 + 120), (2, T0915 + 120)} - {(2, T0915 + 120)}
    agg.add_ticks(ticks([(1, T0915 + 70, 4, 12.0, 111)]))
    assert sink.calls[-1]["bucket"].tolist() == [T0915 + 60, T0915 + 120]
    assert sink.table[(1, T0915 + 60)]["volume"] == 11
    assert sink.table[(1, T0915 + 120)]["volume"] == 9


def test_too_late_tick_dropped_and_counted() -> None:
    sink = Sink()
    agg = BarAggregator(60, sink, grace_s=2.0, late_window_s=300.0)
    agg.add_ticks(ticks([(1, T0915 + 10, 1, 10.0, 100), (1, T0915 + 360, 2, 11.0, 110)]))  # 0 + 60 + 300 <= 360
    n_calls = len(sink.calls)
    agg.add_ticks(ticks([(1, T0915 + 20, 3, 99.0, 105)]))
    assert agg.stats["too_late_dropped"] == 1 and agg.stats["late_corrections"] == 0
    assert len(sink.calls) == n_calls and sink.table[(1, T0915)]["high"] == 10.0
    agg.add_ticks(ticks([(1, T0915 + 61, 4, 99.0, 105)]))  # 60 + 60 + 300 > 360: still correctable
    assert agg.stats["late_corrections"] == 1 and sink.table[(1, T0915 + 60)]["high"] == 99.0


def test_too_late_decided_per_tick_inside_a_batch() -> None:
    sink = Sink()
    agg = BarAggregator(60, sink, grace_s=0, late_window_s=60.0)
    # the second tick is already 2 intervals behind the first one in the same batch
    agg.add_ticks(ticks([(1, T0915 + 200, 1, 10.0, 100), (1, T0915 + 10, 2, 11.0, 110)]))
    assert agg.stats["too_late_dropped"] == 1


def test_first_bucket_volume_is_relative_to_first_tick() -> None:
    sink = Sink()
    agg = BarAggregator(60, sink)
    agg.add_ticks(ticks([(1, T0915 + 1, 1, 10.0, 5000), (1, T0915 + 2, 2, 10.0, 5030), (1, T0915 + 61, 3, 10.0, 5100)]))
    agg.flush()
    rows = sink.rows()
    assert [r["volume"] for r in rows] == [30, 70]
    assert rows[0]["last_recv_ts"] == 2 and rows[1]["last_recv_ts"] == 3


def test_volume_dip_below_the_running_maximum_never_counts_twice() -> None:
    """docs/design.md: a cumulative volume below the day's running maximum is ignored; when it recovers, only what
    exceeds the maximum counts (the old rule took the dip for a new day and counted 5,020 again)."""
    sink = Sink()
    agg = BarAggregator(60, sink)
    agg.add_ticks(
        ticks(
            [
                (1, T0915 + 1, 1, 10.0, 5000),
                (1, T0915 + 2, 2, 11.0, 5030),
                (1, T0915 + 61, 3, 12.0, 40),  # a glitch: below the running maximum
                (1, T0915 + 62, 4, 13.0, 5060),  # recovered: 30 more than the maximum
                (1, T0915 + 63, 5, 14.0, 5050),  # below again: no volume
            ]
        )
    )
    agg.flush()
    rows = sink.rows()
    assert [r["volume"] for r in rows] == [30, 30]
    assert rows[1]["vwap"] == 13.0  # only the tick that raised the maximum carries weight


def test_a_new_ist_trading_day_starts_from_its_first_tick() -> None:
    """The baseline is per trading day: the next morning's first cumulative volume is not traded volume,
    even when it is above yesterday's last."""
    next_day = T0915 + 86_400
    sink = Sink()
    agg = BarAggregator(60, sink)
    agg.add_ticks(ticks([(1, T0915 + 1, 1, 10.0, 50), (1, T0915 + 2, 2, 11.0, 80),
                         (1, next_day + 1, 3, 12.0, 100), (1, next_day + 2, 4, 13.0, 150)]))
    agg.flush()
    rows = sink.rows()
    assert [(r["bucket"], r["volume"]) for r in rows] == [(T0915, 30), (next_day, 50)]


def test_late_tick_raising_the_running_maximum_corrects_the_later_bars() -> None:
    """A late tick whose cumulative volume exceeds what later ticks reported raises the baseline of every
    later bar of that day: they are re-emitted as corrections."""
    sink = Sink()
    agg = BarAggregator(60, sink, grace_s=0, late_window_s=600.0)
    agg.add_ticks(ticks([(1, T0915 + 10, 1, 10.0, 100), (1, T0915 + 70, 2, 11.0, 110),
                         (1, T0915 + 130, 3, 12.0, 120), (1, T0915 + 190, 4, 13.0, 200), (2, T0915 + 250, 5, 1.0, 0)]))
    assert [sink.table[(1, T0915 + 60 * i)]["volume"] for i in range(4)] == [0, 10, 10, 80]
    agg.add_ticks(ticks([(1, T0915 + 20, 6, 9.0, 125)]))  # late, and above the next two bars' maxima
    assert [sink.table[(1, T0915 + 60 * i)]["volume"] for i in range(4)] == [25, 0, 0, 75]
    assert [int(sink.table[(1, T0915 + 60 * i)]["correction"]) for i in range(4)] == [1, 1, 1, 1]


def test_vwap_nan_when_no_volume() -> None:
    sink = Sink()
    agg = BarAggregator(60, sink)
    agg.add_ticks(ticks([(1, T0915 + 1, 1, 10.0, 50), (1, T0915 + 2, 2, 12.0, 50), (2, T0915 + 3, 3, 7.0, 0)]))
    agg.flush()
    for row in sink.rows():
        assert row["volume"] == 0 and math.isnan(row["vwap"])


def test_single_tick_bar_ohlc_all_equal() -> None:
    sink = Sink()
    agg = BarAggregator(300, sink)
    agg.add_ticks(ticks([(7, T0915 + 42, 1, 123.45, 10, 900)]))
    agg.flush()
    (row,) = sink.rows()
    assert row["open"] == row["high"] == row["low"] == row["close"] == 123.45
    assert row["oi"] == row["oi_open"] == row["oi_high"] == row["oi_low"] == 900
    assert row["tick_count"] == 1 and row["volume"] == 0 and math.isnan(row["vwap"])


def test_ohlc_and_oi_follow_event_order_not_receive_order() -> None:
    sink = Sink()
    agg = BarAggregator(60, sink)
    rows = [
        (1, T0915 + 30, 1, 15.0, 10, 500),
        (1, T0915 + 10, 2, 12.0, 5, 400),  # earlier event time, received later
        (1, T0915 + 30, 3, 9.0, 12, 450),  # same second: receive order decides
        (1, T0915 + 20, 4, 20.0, 8, 700),
    ]
    agg.add_ticks(ticks(rows))
    agg.flush()
    (bar,) = sink.rows()
    assert (bar["open"], bar["high"], bar["low"], bar["close"]) == (12.0, 20.0, 9.0, 9.0)
    assert (bar["oi_open"], bar["oi_high"], bar["oi_low"], bar["oi"]) == (400, 700, 400, 450)


def test_multiple_instruments_sorted_by_bucket_then_token() -> None:
    sink = Sink()
    agg = BarAggregator(60, sink)
    agg.add_ticks(ticks([(30, T0915 + 61, 1, 1.0, 0), (10, T0915 + 5, 2, 2.0, 0), (20, T0915 + 60, 3, 3.0, 0)]))
    assert sink.calls == []
    agg.add_ticks(ticks([(20, T0915 + 1, 4, 3.0, 0), (10, T0915 + 130, 5, 4.0, 0)]))
    bars = sink.calls[0]
    assert list(zip(bars["bucket"].tolist(), bars["instrument_token"].tolist())) == [
        (T0915, 10),
        (T0915, 20),
        (T0915 + 60, 20),
        (T0915 + 60, 30),
    ]


@pytest.mark.parametrize("interval", [60, 300, 900])
def test_intervals_1_5_15_minutes_bucket_boundaries(interval: int) -> None:
    rng = np.random.default_rng(interval)
    ex = np.sort(rng.integers(T0915 - 1800, T0915 + 3 * 3600, 3000))
    batch = ticks([(1, int(e), i + 1, float(i % 97), i) for i, e in enumerate(ex)])
    sink = Sink()
    agg = BarAggregator(interval, sink)
    agg.add_ticks(batch)
    agg.flush()
    rows = sink.rows()
    assert all(int(r["bucket"]) % interval == 0 and r["interval_s"] == interval for r in rows)
    assert sum(int(r["tick_count"]) for r in rows) == 3000
    assert sum(int(r["volume"]) for r in rows) == 2999
    expected = np.unique(ex // interval * interval)
    assert [int(r["bucket"]) for r in rows] == expected.tolist()
    if interval == 60:
        assert T0915 - 60 in expected or T0915 in expected


def test_flush_emits_every_open_bar_once() -> None:
    sink = Sink()
    agg = BarAggregator(900, sink)
    agg.add_ticks(ticks([(1, T0915 + 1, 1, 10.0, 0), (1, T0915 + 900, 2, 11.0, 4), (2, T0915 + 901, 3, 1.0, 0)]))
    assert sink.calls == []
    agg.flush()
    assert [(int(b), int(t)) for b, t in zip(sink.calls[0]["bucket"], sink.calls[0]["instrument_token"])] == [
        (T0915, 1),
        (T0915 + 900, 1),
        (T0915 + 900, 2),
    ]
    agg.flush()
    assert len(sink.calls) == 1 and agg.state_size()["open_ticks"] == 0


def test_tick_after_flush_for_flushed_bucket_is_a_correction() -> None:
    sink = Sink()
    agg = BarAggregator(60, sink)
    agg.add_ticks(ticks([(1, T0915 + 1, 1, 10.0, 0)]))
    agg.flush()
    agg.add_ticks(ticks([(1, T0915 + 2, 2, 11.0, 3)]))
    assert agg.stats["late_corrections"] == 1
    assert sink.table[(1, T0915)]["close"] == 11.0 and sink.table[(1, T0915)]["volume"] == 3


def test_memory_freed_after_late_window() -> None:
    sink = Sink()
    agg = BarAggregator(60, sink, grace_s=2.0, late_window_s=120.0)
    rows = [(tok, T0915 + s, s * 10 + tok, 10.0, s) for s in range(0, 600) for tok in (1, 2, 3)]
    agg.add_ticks(ticks(rows))
    size = agg.state_size()
    # buckets closed less than 60 + 120 s ago are kept: at watermark 09:24:59 that is 09:22 and 09:23
    assert size["retained_buckets"] == 2 and size["retained_ticks"] == 2 * 60 * 3
    assert size["open_ticks"] == 60 * 3
    # a steady stream never grows the state
    for minute in range(10, 40):
        agg.add_ticks(ticks([(tok, T0915 + minute * 60 + s, 10**6 + minute * 1000 + s * 10 + tok, 10.0, 0) for s in range(60) for tok in (1, 2, 3)]))
        assert agg.state_size()["retained_buckets"] <= 3
        assert agg.state_size()["open_ticks"] <= 61 * 3
    # the freed buckets no longer accept ticks, the retained ones still do
    agg.add_ticks(ticks([(1, T0915 + 30 * 60, 10**8, 1.0, 0)]))
    assert agg.stats["too_late_dropped"] == 1


def test_late_correction_after_older_buckets_freed_uses_their_baseline() -> None:
    sink = Sink()
    agg = BarAggregator(60, sink, grace_s=0, late_window_s=90.0)
    agg.add_ticks(ticks([(1, T0915 + 10, 1, 10.0, 100), (1, T0915 + 70, 2, 10.0, 150), (1, T0915 + 130, 3, 10.0, 175)]))
    agg.add_ticks(ticks([(2, T0915 + 180, 4, 1.0, 0)]))  # frees 09:15 (0 + 60 + 90 <= 180), keeps 09:16
    assert T0915 not in agg.retained_buckets()
    agg.add_ticks(ticks([(1, T0915 + 80, 5, 12.0, 160)]))  # late into 09:16: baseline from freed 09:15
    assert sink.table[(1, T0915 + 60)]["volume"] == 60
    assert sink.table[(1, T0915 + 120)]["volume"] == 15


def test_empty_batch_is_a_noop() -> None:
    sink = Sink()
    agg = BarAggregator(60, sink)
    agg.add_ticks(np.empty(0, PRICED_TICK_DTYPE))
    agg.add_ticks(np.empty(0, TICK_DTYPE))
    agg.flush()
    assert sink.calls == [] and agg.stats["ticks"] == 0


def test_tick_dtype_without_greeks_gives_nan_greeks() -> None:
    sink = Sink()
    agg = BarAggregator(60, sink)
    agg.add_ticks(ticks([(1, T0915 + 1, 1, 10.0, 0)], dtype=TICK_DTYPE))
    agg.add_ticks(ticks([(2, T0915 + 2, 2, 10.0, 0)]))
    agg.flush()
    one, two = sink.rows()
    assert all(math.isnan(one[g]) for g in CLOSE_FIELDS)
    assert [two[g] for g in CLOSE_FIELDS] == pytest.approx([0.1 + j for j in range(len(CLOSE_FIELDS))])


def test_one_on_bars_call_per_add_ticks_with_everything_it_closed() -> None:
    sink = Sink()
    agg = BarAggregator(60, sink, grace_s=0, late_window_s=300)
    agg.add_ticks(ticks([(1, T0915 + 1, 1, 1.0, 0), (2, T0915 + 61, 2, 1.0, 0), (1, T0915 + 121, 3, 1.0, 0)]))
    assert len(sink.calls) == 1 and len(sink.calls[0]) == 2
    # a late correction and a normal close in the same batch: one call
    agg.add_ticks(ticks([(2, T0915 + 5, 4, 2.0, 0), (3, T0915 + 185, 5, 1.0, 0)]))
    assert len(sink.calls) == 2
    assert list(zip(sink.calls[1]["bucket"].tolist(), sink.calls[1]["instrument_token"].tolist())) == [
        (T0915, 2),
        (T0915 + 60, 2),
        (T0915 + 120, 1),
    ]


def test_invalid_interval_rejected() -> None:
    with pytest.raises(ValueError):
        BarAggregator(0, print)


def test_open_ticks_follow_the_closing_watermark() -> None:
    agg = BarAggregator(60, lambda bars: None, grace_s=2)
    assert agg.state_size()["open_ticks"] == 0
    agg.add_ticks(_open_bucket_ticks(range(0, 59), 1))
    assert agg.state_size()["open_ticks"] == 59
    agg.add_ticks(_open_bucket_ticks(range(60, 63), 100))  # watermark 62: the first bucket closes
    assert agg.state_size()["open_ticks"] == 3 and agg.closed_before() == T0915 + 60
    agg.flush()
    assert agg.state_size()["open_ticks"] == 0


def _open_bucket_ticks(seconds, recv0: int) -> np.ndarray:
    seconds = list(seconds)
    out = np.zeros(len(seconds), TICK_DTYPE)
    out["instrument_token"] = 1
    out["exchange_ts"] = [T0915 + s for s in seconds]
    out["recv_ts"] = recv0 + np.arange(len(seconds))
    out["last_price"] = 100.0
    out["volume"] = 1000 + np.arange(len(seconds))
    out["bid"] = out["ask"] = np.nan
    return out


def test_late_rule_interval_must_divide_the_bar_interval() -> None:
    with pytest.raises(ValueError, match="must divide the bar interval"):
        BarAggregator(300, lambda bars: None, late_rule_interval_s=120)
    BarAggregator(900, lambda bars: None, late_rule_interval_s=60)  # fine


def test_late_tick_after_a_watermark_jump_over_the_late_window_counts_volume_once() -> None:
    """A batch moves the watermark past a whole late window: the freed buckets' ends must not replace the
    newer baseline of the bucket that just closed (it did: +100 volume on the late tick's bar)."""
    t = T0915
    a, b = 1, 2
    stream = ticks([(a, t + 10, 1, 100.0, 100), (a, t + 50, 2, 101.0, 200), (a, t + 70, 3, 102.0, 300),
                    (b, t + 63, 4, 50.0, 10), (a, t + 110, 5, 104.0, 400), (a, t + 130, 6, 105.0, 500),
                    (b, t + 185, 7, 51.0, 20), (a, t + 125, 8, 104.5, 450)])
    args = {"interval_s": 60, "grace_s": 2.0, "late_window_s": 60.0}
    one_by_one = run(args, [stream[i:i + 1] for i in range(len(stream))], ref=Reference(60, 2.0, 60.0))
    in_3_4_1 = run(args, [stream[:3], stream[3:7], stream[7:]], ref=Reference(60, 2.0, 60.0))
    bar = one_by_one.table[(a, t + 120)]
    assert bar["volume"] == 100 and bar["vwap"] == pytest.approx((104.5 * 50 + 105.0 * 50) / 100)
    assert same_bars(in_3_4_1.rows(), one_by_one.rows())
