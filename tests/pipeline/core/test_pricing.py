import datetime as dt
from collections.abc import Callable

import numpy as np
import pytest

from pipeline.core.price_book import PriceBook
from pipeline.core.pricing import PricingContext, PricingRules, price_ticks
from pipeline.feed.instruments import select_universe
from pipeline.feed.kite_wire import MODE_FULL
from pipeline.feed.stamping import ticks_from_kite
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.kinds import InstrumentKind
from sim.market import (
    DEFAULT_UNDERLYINGS,
    Market,
    build_instruments,
    session_start_ts,
)

pytestmark = pytest.mark.unit

DAY = dt.date(2026, 11, 23)
R = 0.065


def _pricer(index: InstrumentIndex, rules: PricingRules | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """Price successive batches against one book, as an engine does (the book is the only state)."""
    ctx = PricingContext.of(index, R, rules or PricingRules())
    book = PriceBook(len(index))
    return lambda ticks: price_ticks(ctx, book, ticks)


def _setup(drop_kinds: tuple[int, ...] = ()) -> tuple[Market, InstrumentIndex, np.ndarray]:
    spec = DEFAULT_UNDERLYINGS["NIFTY"]
    rows = build_instruments([spec], DAY, n_expiries=2, strikes_each_side=6)
    market = Market(rows, [spec], session_start_ts(DAY), seed=11, r=R)
    index = InstrumentIndex.from_rows(select_universe(rows, ["NIFTY"], 2, 4, today=DAY))
    keep = ~np.isin(index.kind, drop_kinds)
    return market, index, index.tokens[keep]


def _ticks(market: Market, tokens: np.ndarray) -> np.ndarray:
    snap = market.snapshot(market.positions(tokens), MODE_FULL)
    return ticks_from_kite(snap, np.arange(1, len(snap) + 1, dtype=np.int64))


def test_forward_is_the_same_expiry_future_when_subscribed() -> None:
    market, index, tokens = _setup()
    priced = _pricer(index)(_ticks(market, tokens))
    pos = index.positions(priced["instrument_token"])
    fut_price = priced["last_price"][index.kind[pos] == InstrumentKind.FUT][0]
    fut_expiry = index.expiry_ts[pos][index.kind[pos] == InstrumentKind.FUT][0]
    same = np.isin(index.kind[pos], (InstrumentKind.CALL, InstrumentKind.PUT)) & (index.expiry_ts[pos] == fut_expiry)
    assert same.any()
    np.testing.assert_array_equal(priced["forward"][same], fut_price)


def test_without_futures_parity_forward_recovers_the_model_forward() -> None:
    market, index, tokens = _setup(drop_kinds=(InstrumentKind.FUT,))
    priced = _pricer(index)(_ticks(market, tokens))
    pos = index.positions(priced["instrument_token"])
    options = np.isin(index.kind[pos], (InstrumentKind.CALL, InstrumentKind.PUT))
    t = (index.expiry_ts[pos][options] - priced["exchange_ts"][options]) / (365 * 86400)
    model_forward = market.spot["NIFTY"] * np.exp(R * t)
    # prices are rounded to the 0.05 tick, so parity is good to about a tick
    np.testing.assert_allclose(priced["forward"][options], model_forward, atol=0.2)


def test_implied_vol_recovers_the_market_smile() -> None:
    market, index, tokens = _setup()
    priced = _pricer(index)(_ticks(market, tokens))
    pos = index.positions(priced["instrument_token"])
    options = np.isin(index.kind[pos], (InstrumentKind.CALL, InstrumentKind.PUT)) & (priced["last_price"] > 5)
    assert options.sum() > 10
    iv = priced["iv"][options]
    assert np.isfinite(iv).all()
    np.testing.assert_allclose(iv, DEFAULT_UNDERLYINGS["NIFTY"].atm_vol, atol=0.03)
    assert ((priced["delta"][options] > -1) & (priced["delta"][options] < 1)).all()


def test_non_options_and_unknown_tokens_get_nan_greeks() -> None:
    market, index, tokens = _setup()
    ticks = _ticks(market, tokens)
    ticks["instrument_token"][0] = 999  # not in the index
    priced = _pricer(index)(ticks)
    pos = index.positions(priced["instrument_token"])
    not_option = (pos < 0) | np.isin(index.kind[np.maximum(pos, 0)], (InstrumentKind.INDEX, InstrumentKind.FUT))
    assert not_option.sum() >= 2
    assert np.isnan(priced["iv"][not_option]).all() and np.isnan(priced["forward"][not_option]).all()


def test_expired_option_gets_nan_not_a_number() -> None:
    market, index, tokens = _setup()
    ticks = _ticks(market, tokens)
    ticks["exchange_ts"] = index.expiry_ts.max() + 60  # after every expiry's 15:30 IST
    priced = _pricer(index)(ticks)
    pos = index.positions(priced["instrument_token"])
    options = np.isin(index.kind[pos], (InstrumentKind.CALL, InstrumentKind.PUT))
    assert np.isnan(priced["iv"][options]).all()
