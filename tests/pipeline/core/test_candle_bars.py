"""Bars from historical candles (``pipeline.core.backfill``): the candle's numbers, the close priced against
the same minute's forward, coarse bars equal to their minutes; on a flat-volatility Black-76 chain."""

import datetime as dt
import math

import numpy as np
import pytest

import greeks
from pipeline.core.backfill import (
    candle_bars,
    coarse_bars,
    gap_minutes,
    price_minute_bars,
    settled_spans,
)
from pipeline.core.pricing import PricingRules
from pipeline.feed.instruments import select_universe
from pipeline.records.bars import BAR_DTYPE, CANDLE_DTYPE, CHECKED_DTYPE
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.kinds import InstrumentKind
from pipeline.records.ticks import FORWARD_CARRY, FORWARD_FUTURE, FORWARD_PARITY
from sim.market import DEFAULT_UNDERLYINGS, build_instruments, session_start_ts

pytestmark = pytest.mark.unit

DAY = dt.date(2026, 12, 28)
R, VOL, SPOT = 0.065, 0.15, 24500.0
MINUTE = int(session_start_ts(DAY)) + 600
INDEX = InstrumentIndex.from_rows(select_universe(
    build_instruments([DEFAULT_UNDERLYINGS["NIFTY"]], DAY, n_expiries=2, strikes_each_side=6), ["NIFTY"], 2, 6,
    today=DAY))
FUT = np.flatnonzero(INDEX.kind == InstrumentKind.FUT)[0]
EXPIRY = INDEX.expiry_ts[FUT]
OPTIONS = np.flatnonzero(np.isin(INDEX.kind, (InstrumentKind.CALL, InstrumentKind.PUT)) & (INDEX.expiry_ts == EXPIRY))
SPOT_ROW = np.flatnonzero(INDEX.kind == InstrumentKind.INDEX)[0]


def _candles(rows: np.ndarray, closes: np.ndarray, minute: int = MINUTE) -> np.ndarray:
    c = np.zeros(len(rows), CANDLE_DTYPE)
    c["instrument_token"], c["bucket"] = INDEX.tokens[rows], minute
    c["open"], c["high"], c["low"], c["close"] = closes + 1, closes + 2, closes - 1, closes
    c["volume"], c["oi"] = np.arange(len(rows)) + 10, 500
    return c


def _chain_closes(forward: float, now: int) -> np.ndarray:
    t = (EXPIRY - now) / (365 * 86400)
    return greeks.black76_price(forward, INDEX.strike[OPTIONS], t, R, VOL, INDEX.kind[OPTIONS] == InstrumentKind.CALL)


def test_candle_bars_keep_the_candles_numbers_and_no_tick_count() -> None:
    bars = candle_bars(_candles(OPTIONS[:3], np.array([10.0, 20.0, 30.0])), fetched_us=7)
    assert bars["close"].tolist() == [10.0, 20.0, 30.0] and bars["high"].tolist() == [12.0, 22.0, 32.0]
    assert bars["volume"].tolist() == [10, 11, 12] and set(bars["oi_open"].tolist()) == {500}
    assert set(bars["tick_count"].tolist()) == {0} and set(bars["last_recv_ts"].tolist()) == {7}
    assert np.isnan(bars["iv"]).all() and np.isnan(bars["vwap"]).all()


@pytest.mark.parametrize(("with_future", "source"), [(True, FORWARD_FUTURE), (False, FORWARD_PARITY)])
def test_closes_priced_against_the_same_minutes_forward_give_back_the_volatility(with_future, source) -> None:
    now = MINUTE + 60
    forward = SPOT * math.exp(R * (EXPIRY - now) / (365 * 86400))
    rows, closes = OPTIONS, _chain_closes(forward, now)
    if with_future:
        rows, closes = np.r_[rows, FUT], np.r_[closes, forward]
    priced = price_minute_bars(candle_bars(_candles(rows, closes), 0), INDEX, R, PricingRules())
    options = np.isin(priced["instrument_token"], INDEX.tokens[OPTIONS])
    assert set(priced["forward_source"][options].tolist()) == {source}
    assert np.allclose(priced["forward"][options], forward, rtol=1e-6)
    ok = ~np.isnan(priced["iv"][options])
    assert ok.sum() >= len(OPTIONS) - 2 and np.allclose(priced["iv"][options][ok], VOL, atol=2e-4)
    assert set(priced["stale"][options].tolist()) == {0.0}
    assert np.isnan(priced["iv"][~options]).all()  # the future itself is not an option


def test_a_minute_with_only_the_index_prices_options_on_carry() -> None:
    now = MINUTE + 60
    rows = np.r_[OPTIONS[:1], SPOT_ROW]
    priced = price_minute_bars(candle_bars(_candles(rows, np.array([100.0, SPOT])), 0), INDEX, R, PricingRules())
    option = priced["instrument_token"] == INDEX.tokens[OPTIONS[0]]
    assert priced["forward_source"][option][0] == FORWARD_CARRY
    assert math.isclose(priced["forward"][option][0], SPOT * math.exp(R * (EXPIRY - now) / (365 * 86400)))


def test_coarse_bars_equal_the_plain_grouping_of_their_minutes() -> None:
    rng = np.random.default_rng(3)
    parts = [_candles(OPTIONS[:4], rng.uniform(50, 60, 4), MINUTE + 60 * i) for i in range(7)]
    minutes = candle_bars(np.concatenate(parts), 0)
    five = coarse_bars(minutes, 300)
    for bar in five:
        mine = minutes[(minutes["instrument_token"] == bar["instrument_token"])
                       & (minutes["bucket"] // 300 * 300 == bar["bucket"])]
        mine = mine[np.argsort(mine["bucket"])]
        assert bar["open"] == mine["open"][0] and bar["close"] == mine["close"][-1]
        assert bar["high"] == mine["high"].max() and bar["low"] == mine["low"].min()
        assert bar["volume"] == mine["volume"].sum()
    assert len(five) == 4 * len(np.unique(minutes["bucket"] // 300))


def _stored(token: int, buckets: list[int]) -> np.ndarray:
    bars = np.zeros(len(buckets), BAR_DTYPE)
    bars["instrument_token"], bars["bucket"] = token, buckets
    return bars


def test_gap_minutes_leave_out_stored_bars_and_minutes_kite_already_answered() -> None:
    minutes = MINUTE + 60 * np.arange(10)
    stored = _stored(7, [MINUTE + 60, MINUTE + 120])
    checked = np.array([(7, MINUTE + 300, MINUTE + 480), (8, MINUTE, MINUTE + 600)], dtype=CHECKED_DTYPE)
    gaps = gap_minutes(np.array([7, 8, 9]), minutes, stored, checked)
    want_7 = [m for m in minutes.tolist() if m not in (MINUTE + 60, MINUTE + 120) and not MINUTE + 300 <= m < MINUTE + 480]
    assert gaps[7].tolist() == want_7
    assert 8 not in gaps  # every minute answered before: nothing to ask
    assert gaps[9].tolist() == minutes.tolist()


def test_settled_spans_cover_what_was_asked_up_to_the_settling_margin() -> None:
    asked = {7: MINUTE + 60 * np.array([0, 3, 9]), 8: MINUTE + 60 * np.array([8, 9])}
    fetched = MINUTE + 60 * 9 + 30 + 120  # minute 9 still being written when asked; minute 8 had just settled
    spans = settled_spans(asked, fetched, settle_s=120)
    assert spans.tolist() == [(7, MINUTE, MINUTE + 60 * 9), (8, MINUTE + 60 * 8, MINUTE + 60 * 9)]
    # asked long after: the whole span, to the end of its last minute
    assert settled_spans(asked, MINUTE + 86400).tolist() == [(7, MINUTE, MINUTE + 600), (8, MINUTE + 480, MINUTE + 600)]
    # asked too soon: nothing settles, the minutes are asked for again next time
    assert len(settled_spans(asked, MINUTE + 100)) == 0
