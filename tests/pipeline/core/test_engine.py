"""The underlying engines in-process: the process agent's logic on generated market batches, no servers.

Bars are checked against a plain recomputation from the priced ticks (group by
instrument and bucket, sort by (exchange_ts, recv_ts), take first/last); the
rollups against OIRollup fed the same bars; redelivery, seeds and the replay
horizon against their definitions.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from pipeline.core.bars.aggregator import BarAggregator
from pipeline.core.chain_quality import QUALITY_FIELDS
from pipeline.core.engines import Engines
from pipeline.core.outputs import BarConfig, EngineConfig
from pipeline.core.rollups import OIRollup
from pipeline.feed.ingestor import split_by_underlying
from pipeline.feed.instruments import select_universe
from pipeline.feed.stamping import ReceiveClock, ticks_from_kite
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.kinds import OPTION_KINDS, InstrumentKind
from pipeline.records.ticks import MODE_FULL, decode_ticks, encode_ticks
from sim.market import (
    DEFAULT_UNDERLYINGS,
    Market,
    build_instruments,
    session_start_ts,
)

pytestmark = pytest.mark.unit

DAY = dt.date(2026, 11, 25)  # a trading day (the 24th is a holiday: the market would stand still)
R = 0.065
CONFIG = BarConfig(intervals_s=(60, 300), grace_s=2.0, late_window_s=120.0)


def _engines(index: InstrumentIndex, bars: BarConfig = CONFIG) -> Engines:
    return Engines(EngineConfig(bars=bars, r=R), index)


def _market() -> tuple[Market, InstrumentIndex]:
    specs = [DEFAULT_UNDERLYINGS["NIFTY"], DEFAULT_UNDERLYINGS["BANKNIFTY"]]
    rows = build_instruments(specs, DAY, n_expiries=2, strikes_each_side=4)
    market = Market(rows, specs, session_start_ts(DAY), seed=5, r=R)
    return market, InstrumentIndex.from_rows(select_universe(rows, ["NIFTY", "BANKNIFTY"], 2, 3, today=DAY))


def _records(seconds: int, per_step: int = 12, seed: int = 3) -> tuple[InstrumentIndex, list[tuple[str, bytes]]]:
    """Ticks records as the ingestor produces them: one frame a second, split by underlying, encoded."""
    market, index = _market()
    rng = np.random.default_rng(seed)
    clock = ReceiveClock()
    start = session_start_ts(DAY)
    records = []
    for step in range(seconds):
        market.advance(start + step)
        tokens = rng.choice(index.tokens, size=per_step, replace=False)
        pos = market.positions(tokens)
        market.trade(pos)
        snap = market.snapshot(pos)
        ticks = ticks_from_kite(snap, clock.stamp(len(snap), int((start + step) * 1e6)))
        groups, unknown = split_by_underlying(ticks, index)
        assert unknown == 0
        records += [(u, encode_ticks(u, rows)) for u, rows in groups.items()]
    return index, records


def _assert_rows_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    """Structured arrays equal field by field (NaN equals NaN); floats to the last bits only, since a
    5-minute VWAP combined from 1-minute sums adds the same terms in another order."""
    assert actual.dtype == expected.dtype and len(actual) == len(expected)
    for name in actual.dtype.names:
        if actual.dtype[name].kind == "f":
            np.testing.assert_allclose(actual[name], expected[name], rtol=1e-13, atol=0, err_msg=name)
        else:
            np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


def _run(records: list[tuple[str, bytes]], index: InstrumentIndex) -> tuple[list, np.ndarray, list[np.ndarray]]:
    engines = _engines(index)
    results = []
    for _, payload in records:
        underlying, ticks = decode_ticks(payload)
        engines.seed_requests(underlying, ticks)
        results.append(engines.process(underlying, ticks))
    priced = np.concatenate([r.priced for r in results])
    return results, priced, [r.bars for r in results if r.bars is not None]


def test_process_bars_equal_a_plain_recomputation_from_the_priced_ticks() -> None:
    index, records = _records(200)
    results, priced, bar_batches = _run(records, index)
    bars = np.concatenate(bar_batches)
    one_minute = bars[bars["interval_s"] == 60]
    assert len(one_minute) > 20
    for bar in one_minute:
        mine = priced[(priced["instrument_token"] == bar["instrument_token"])
                      & (priced["exchange_ts"] // 60 * 60 == bar["bucket"])]
        mine = mine[np.lexsort((mine["recv_ts"], mine["exchange_ts"]))]
        assert bar["open"] == mine["last_price"][0] and bar["close"] == mine["last_price"][-1]
        assert bar["high"] == mine["last_price"].max() and bar["low"] == mine["last_price"].min()
        assert bar["tick_count"] == len(mine) and bar["oi"] == mine["oi"][-1]
        earlier = priced[(priced["instrument_token"] == bar["instrument_token"]) & (priced["exchange_ts"] < bar["bucket"])]
        base = earlier["volume"].max() if len(earlier) else mine["volume"][0]
        assert bar["volume"] == mine["volume"][-1] - base
        np.testing.assert_equal(bar["iv"], mine["iv"][-1])
    # every bar closed once: (token, interval, bucket) unique, as nothing arrived late
    keys = set(zip(bars["instrument_token"].tolist(), bars["interval_s"].tolist(), bars["bucket"].tolist()))
    assert len(keys) == len(bars)


def test_process_routes_like_the_parts_it_composes() -> None:
    """Same bars as one aggregator per interval, same rollup rows as OIRollup over those bars."""
    index, records = _records(400)
    results, priced, bar_batches = _run(records, index)
    for underlying in ("NIFTY", "BANKNIFTY"):
        own = [r for r in results if r.underlying == underlying]
        ticks = np.concatenate([r.priced for r in own])
        for interval in CONFIG.intervals_s:
            got: list[np.ndarray] = []
            agg = BarAggregator(interval, got.append, grace_s=CONFIG.grace_s, late_window_s=CONFIG.late_window_s)
            rollup = OIRollup(underlying, interval, retain_s=CONFIG.late_window_s + CONFIG.grace_s + 2 * interval)
            expected_chain = []
            for r in own:
                n_before = len(got)
                agg.add_ticks(r.priced)
                for b in got[n_before:]:
                    expected_chain.append(rollup.update(b, index)[1])
            mine = np.concatenate([r.bars[r.bars["interval_s"] == interval] for r in own if r.bars is not None])
            _assert_rows_equal(mine, np.concatenate(got))
            chain = np.concatenate([r.chain_rows[r.chain_rows["interval_s"] == interval] for r in own])
            assert len(chain) > 0
            from_bars = [n for n in chain.dtype.names if n not in QUALITY_FIELDS]  # quality: from the quotes
            _assert_rows_equal(chain[from_bars], np.concatenate(expected_chain)[from_bars])
        assert len(ticks) == sum(len(decode_ticks(p)[1]) for u, p in records if u == underlying)


def test_redelivered_record_counts_duplicates_and_changes_no_bar() -> None:
    index, records = _records(90)
    engines = _engines(index)
    for _, payload in records[:50]:
        underlying, ticks = decode_ticks(payload)
        engines.process(underlying, ticks)
    underlying, ticks = decode_ticks(records[49][1])
    again = engines.process(underlying, ticks)
    assert again.counts.duplicates == len(ticks) and again.counts.too_late == 0
    assert again.bars is None and len(again.chain_rows) == 0


def test_start_asks_for_the_seeds_of_the_underlyings_options_once() -> None:
    index, records = _records(5)
    engines = _engines(index)
    underlying, ticks = decode_ticks(records[0][1])
    requests = engines.seed_requests(underlying, ticks)
    own = index.tokens[(index.underlying == underlying) & np.isin(index.kind, OPTION_KINDS)]
    assert [r.interval_s for r in requests] == list(CONFIG.intervals_s)
    first = int(ticks["exchange_ts"].min())
    for r in requests:
        np.testing.assert_array_equal(r.tokens, own)
        # a first tick exactly at a bucket start: nothing of it was seen before, seed below it
        bucket = first // r.interval_s * r.interval_s
        assert r.before == (bucket if first == bucket else bucket + r.interval_s)
    assert engines.seed_requests(underlying, ticks) == []


def test_the_last_buckets_stay_open_until_the_watermark_passes() -> None:
    index, records = _records(130)
    engines = _engines(index)
    for _, payload in records:
        underlying, ticks = decode_ticks(payload)
        result = engines.process(underlying, ticks)
        for name in ticks.dtype.names:  # priced in receive order, the tick fields as received
            np.testing.assert_array_equal(result.priced[name], ticks[name], err_msg=name)
    assert engines.get("NIFTY").bars.aggregator.state_size()["open_ticks"] > 0  # the last buckets are still open


def test_empty_batch_gives_an_empty_result() -> None:
    index, records = _records(2)
    underlying, ticks = decode_ticks(records[0][1])
    result = _engines(index).process(underlying, ticks[:0])
    assert result.bars is None and len(result.priced) == 0


def _latest_versions(bars: list[np.ndarray]) -> dict[tuple[int, int, int], np.void]:
    """The newest version of every bar (what the upsert keeps): later emissions replace earlier ones."""
    out: dict[tuple[int, int, int], np.void] = {}
    for batch in bars:
        for bar in batch:
            out[(int(bar["interval_s"]), int(bar["instrument_token"]), int(bar["bucket"]))] = bar
    return out


def test_with_late_ticks_every_5m_bar_equals_its_1m_bars() -> None:
    """One late-tick rule for all intervals: a tick 6.5 minutes late reaches no bar rather than only the
    5-minute one, and each 5-minute bar sums its five 1-minute bars."""
    index, records = _records(900, per_step=8)
    rng = np.random.default_rng(4)
    engines = _engines(index)
    emitted, too_late, recv = [], 0, 2_000_000_000_000_000
    for n, (_, payload) in enumerate(records):
        underlying, ticks = decode_ticks(payload)
        if n % 7 == 3 and len(ticks):  # a late copy of a tick, 30-400 s older, received now
            late = ticks[:1].copy()
            late["exchange_ts"] -= int(rng.integers(30, 400))
            late["recv_ts"] = recv = recv + 1
            ticks = np.concatenate([ticks, late])
        result = engines.process(underlying, ticks)
        too_late += result.counts.too_late
        if result.bars is not None:
            emitted.append(result.bars)
    assert too_late > 0  # each counted once: the 1-minute aggregator decides for every interval
    bars = _latest_versions(emitted)
    five = [(k, b) for k, b in bars.items() if k[0] == 300]
    assert len(five) > 10
    for (_, token, bucket), bar in five:
        minutes = [bars.get((60, token, bucket + 60 * i)) for i in range(5)]
        minutes = [m for m in minutes if m is not None]
        assert bar["tick_count"] == sum(int(m["tick_count"]) for m in minutes), (token, bucket)
        assert bar["volume"] == sum(int(m["volume"]) for m in minutes), (token, bucket)
        assert bar["open"] == minutes[0]["open"] and bar["close"] == minutes[-1]["close"]
        assert bar["high"] == max(m["high"] for m in minutes) and bar["low"] == min(m["low"] for m in minutes)


def test_clock_record_closes_the_bars_of_a_quiet_underlying_once() -> None:
    """The session's last bars close on the exchange clock, not on the next morning's first tick."""
    index, records = _records(50)  # 50 s of ticks: the first minute is still open
    engines = _engines(index)
    for _, payload in records:
        underlying, ticks = decode_ticks(payload)
        engines.process(underlying, ticks)
    open_bucket = int(engines.get("NIFTY").bars.aggregator.to_state()["pending"]["exchange_ts"].min()) // 60 * 60
    assert engines.advance("NIFTY", open_bucket + 60).bars is None  # within the grace: still open
    closed = engines.advance("NIFTY", open_bucket + 60 + int(CONFIG.grace_s))
    assert closed.bars is not None and set(closed.bars["interval_s"].tolist()) == {60}
    assert set(closed.bars["bucket"].tolist()) == {open_bucket} and len(closed.chain_rows) > 0
    assert len(closed.priced) == 0
    assert engines.advance("NIFTY", open_bucket + 30).bars is None  # never back, never twice
    assert engines.advance("NIFTY", open_bucket + 300 + 2).bars["interval_s"].tolist().count(300) > 0
    assert engines.advance("NOT_SEEN", open_bucket + 900).bars is None


def test_a_silence_in_receive_time_is_a_feed_gap_once_and_replays_are_not() -> None:
    index, records = _records(20)
    engines = _engines(index)
    nifty = [decode_ticks(p)[1] for u, p in records if u == "NIFTY"]
    gaps = [engines.process("NIFTY", t).counts.feed_gap_s for t in nifty[:10]]
    assert gaps == [0.0] * 10  # one batch a second: no gap
    later = nifty[10].copy()
    later["recv_ts"] += 7_000_000  # the ingestor was away for 7 s
    gap = engines.process("NIFTY", later).counts.feed_gap_s
    assert 7.0 < gap < 9.0
    assert engines.process("NIFTY", nifty[3]).counts.feed_gap_s == 0.0  # a redelivery
    follow = nifty[11].copy()
    follow["recv_ts"] += 7_000_000
    assert engines.process("NIFTY", follow).counts.feed_gap_s == 0.0  # back to normal


def _plain_quality(ticks: np.ndarray, index: InstrumentIndex, underlying: str, expiry: str, now: int,
                   fresh_s: float) -> tuple[int, int, int]:
    """(crossed_quotes, strikes_quoted, butterfly_violations) of one expiry at ``now``, counted plainly from the
    ticks received so far: each option's last full-mode tick is its quote."""
    quotes = {}
    for tick in ticks[ticks["mode"] == MODE_FULL]:  # receive order: the last one wins
        quotes[int(tick["instrument_token"])] = (float(tick["bid"]), float(tick["ask"]), int(tick["exchange_ts"]))
    sides: dict[float, dict[int, tuple[float, float, int]]] = {}
    for i in range(len(index)):
        if index.underlying[i] == underlying and index.expiry[i] == expiry and index.kind[i] in OPTION_KINDS:
            sides.setdefault(float(index.strike[i]), {})[int(index.kind[i])] = quotes.get(int(index.tokens[i]))
    crossed, mids = 0, []
    for strike in sorted(sides):
        if len(sides[strike]) != 2:
            continue
        usable = []
        for quote in sides[strike].values():
            fresh = quote is not None and quote[2] > 0 and now - quote[2] <= fresh_s
            if fresh and quote[0] > 0 and quote[1] > 0 and quote[0] >= quote[1]:
                crossed += 1
            usable.append(fresh and quote[0] > 0 and quote[1] > quote[0])
        if all(usable):
            call = sides[strike][int(InstrumentKind.CALL)]
            mids.append((strike, (call[0] + call[1]) / 2))
    butterflies = 0
    for (k1, c1), (k2, c2), (k3, c3) in zip(mids, mids[1:], mids[2:]):
        if c2 - ((k3 - k2) * c1 + (k2 - k1) * c3) / (k3 - k1) > 1e-9:
            butterflies += 1
    return crossed, len(mids), butterflies


def test_chain_quality_counts_equal_a_plain_count_of_the_quotes_at_each_close() -> None:
    index, records = _records(400)
    engines = _engines(index)
    seen = []
    checked = 0
    for _, payload in records:
        underlying, ticks = decode_ticks(payload)
        seen.append(ticks)
        engines.seed_requests(underlying, ticks)
        result = engines.process(underlying, ticks)
        so_far = np.concatenate(seen)
        for row in result.chain_rows[result.chain_rows["interval_s"] == 60]:
            now = int(row["bucket"]) + 60
            expected = _plain_quality(so_far, index, underlying, row["expiry"].decode(), now, engines.config.rules.fresh_s)
            assert (int(row["crossed_quotes"]), int(row["strikes_quoted"]), int(row["butterfly_violations"])) == expected
            assert 0 <= row["parity_violations"] <= row["strikes_quoted"]
            checked += 1
        for row in result.chain_rows[result.chain_rows["interval_s"] == 300]:
            one_minute = [r for r in result.chain_rows if r["interval_s"] == 60 and r["expiry"] == row["expiry"]
                          and r["bucket"] == row["bucket"] + 240]
            assert [int(r["strikes_quoted"]) for r in one_minute] == [int(row["strikes_quoted"])]
    assert checked > 20


def _bars_from(ticks: np.ndarray, token: int, bucket: int) -> tuple[float, float, float, float, int]:
    """The plain 1-minute OHLC and tick count of ``token`` in ``bucket`` from priced ``ticks``."""
    mine = ticks[(ticks["instrument_token"] == token) & (ticks["exchange_ts"] // 60 * 60 == bucket)]
    mine = mine[np.lexsort((mine["recv_ts"], mine["exchange_ts"]))]
    prices = mine["last_price"]
    return prices[0], prices.max(), prices.min(), prices[-1], len(mine)


def test_far_future_and_far_past_ticks_never_move_event_time_and_bars_equal_the_clean_ticks() -> None:
    index, records = _records(200)
    engines = _engines(index, BarConfig(intervals_s=(60, 300), grace_s=2.0, late_window_s=120.0,
                                        max_clock_skew_s=300.0))
    clean, bars, future, too_late = [], [], 0, 0
    for i, (_, payload) in enumerate(records):
        underlying, ticks = decode_ticks(payload)
        newest = int(ticks["exchange_ts"].max())
        if i in (40, 41):  # between normal records: one tick from 2096, one from the day before
            hostile = ticks[:1].copy()
            hostile["exchange_ts"] = 4_000_000_000 if i == 40 else int(ticks["exchange_ts"][0]) - 86_400
            hostile["recv_ts"] = ticks["recv_ts"][0] - 1
            ticks = np.concatenate([hostile, ticks])
        engines.seed_requests(underlying, ticks)
        result = engines.process(underlying, ticks)
        future += len(result.rejected)
        too_late += result.counts.too_late
        clean.append(result.priced[result.priced["exchange_ts"] > newest - 86_000])  # without the far-past one
        if result.bars is not None:
            bars.append(result.bars)
    assert future == 1 and too_late >= 1
    assert engines.get("NIFTY").event_time() < 4_000_000_000
    assert engines.get("BANKNIFTY").event_time() < 4_000_000_000
    priced = np.concatenate(clean)
    one_minute = np.concatenate(bars)
    one_minute = one_minute[one_minute["interval_s"] == 60]
    assert len(one_minute) > 20  # bars kept closing after the hostile ticks
    for bar in one_minute:
        assert (bar["open"], bar["high"], bar["low"], bar["close"], bar["tick_count"]) == _bars_from(
            priced, int(bar["instrument_token"]), int(bar["bucket"]))


def test_a_batch_that_fails_in_pricing_leaves_the_engine_exactly_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    index, records = _records(30)
    engines = _engines(index)
    nifty = [decode_ticks(p)[1] for u, p in records if u == "NIFTY"]
    for ticks in nifty[:20]:
        engines.process("NIFTY", ticks)
    engine = engines.get("NIFTY")
    before = {name: getattr(engine.book, name).copy() for name in ("last_price", "trade_ts", "volume", "bid")}
    event_time, ticks_seen = engine.event_time(), engine.bars.aggregator.stats["ticks"]

    def half_priced(ctx, book, ticks):  # noqa: ANN001, ANN202 - updates the book, then fails
        book.update(ctx.index.positions(ticks["instrument_token"]), ticks)
        raise FloatingPointError("a defect in pricing")

    monkeypatch.setattr("pipeline.core.engine.price_ticks", half_priced)
    with pytest.raises(FloatingPointError):
        engines.process("NIFTY", nifty[20])
    assert engines.get("NIFTY") is engine and not engine.broken
    for name, column in before.items():
        np.testing.assert_array_equal(getattr(engine.book, name), column, err_msg=name)
    assert engine.event_time() == event_time and engine.bars.aggregator.stats["ticks"] == ticks_seen
    monkeypatch.undo()
    assert len(engines.process("NIFTY", nifty[20]).priced) == len(nifty[20])  # the batch is taken when it can be


def test_a_batch_that_fails_past_pricing_discards_the_underlyings_state_not_the_others(
        monkeypatch: pytest.MonkeyPatch) -> None:
    index, records = _records(30)
    engines = _engines(index)
    for _, payload in records[:30]:
        engines.process(*decode_ticks(payload))
    nifty, banknifty = engines.get("NIFTY"), engines.get("BANKNIFTY")
    assert nifty.event_time() is not None

    def half_added(ticks):  # noqa: ANN001, ANN202 - the aggregator takes the ticks, then a defect
        nifty.bars.aggregator.add_ticks(ticks)
        raise IndexError("a defect in the rollups")

    monkeypatch.setattr(nifty.bars, "add", half_added)
    underlying, ticks = next(decode_ticks(p) for u, p in records[30:] if u == "NIFTY")
    with pytest.raises(IndexError):
        engines.process(underlying, ticks)
    assert engines.underlyings() == ["BANKNIFTY"] and engines.get("BANKNIFTY") is banknifty
    fresh = engines.get("NIFTY")
    assert fresh is not nifty and fresh.event_time() is None  # starts fresh, never from half a batch
