"""The freshness rules of the pricer (docs/design.md "Pricing model", "Fresh", "IV"), on hand-built ticks.

The chain is the simulator's NIFTY listing; prices come from a flat-volatility Black-76 market written
plainly here, so every expected forward and IV is known exactly.
"""

import datetime as dt
import math
from collections.abc import Callable

import numpy as np
import pytest

import greeks
from pipeline.core.price_book import PriceBook
from pipeline.core.pricing import PricingContext, PricingRules, price_ticks
from pipeline.feed.instruments import select_universe
from pipeline.feed.kite_wire import MODE_FULL, MODE_QUOTE
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.kinds import InstrumentKind
from pipeline.records.ticks import (
    FORWARD_CARRY,
    FORWARD_FUTURE,
    FORWARD_PARITY,
    TICK_DTYPE,
)
from sim.market import DEFAULT_UNDERLYINGS, build_instruments, session_start_ts

pytestmark = pytest.mark.unit

DAY = dt.date(2026, 12, 28)  # a Monday: the weekly expiry (Tuesday 29th) is the monthly one, with a future
R = 0.065


def _pricer(index: InstrumentIndex, rules: PricingRules | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """Price successive batches against one book, as an engine does (the book is the only state)."""
    ctx = PricingContext.of(index, R, rules or PricingRules())
    book = PriceBook(len(index))
    return lambda ticks: price_ticks(ctx, book, ticks)
VOL = 0.15
T0 = int(session_start_ts(DAY)) + 600  # 09:25 IST
SPOT = 24500.0


def _index() -> InstrumentIndex:
    spec = DEFAULT_UNDERLYINGS["NIFTY"]
    rows = build_instruments([spec], DAY, n_expiries=2, strikes_each_side=8)
    return InstrumentIndex.from_rows(select_universe(rows, ["NIFTY"], 2, 8, today=DAY))


INDEX = _index()


def _token(kind: InstrumentKind, strike: float = 0.0, expiry_ts: int | None = None) -> int:
    mask = INDEX.kind == kind
    if expiry_ts is not None:
        mask &= INDEX.expiry_ts == expiry_ts
    if strike:
        mask &= INDEX.strike == strike
    return int(INDEX.tokens[np.flatnonzero(mask)[0]])


FUT_EXPIRY = int(INDEX.expiry_ts[INDEX.kind == InstrumentKind.FUT][0])
SPOT_TOKEN = _token(InstrumentKind.INDEX)
FUT_TOKEN = _token(InstrumentKind.FUT)


def _model(forward: float, strike: float, ts: int, is_call: bool) -> float:
    t = (FUT_EXPIRY - ts) / (365 * 86400)
    return float(greeks.black76_price(forward, strike, t, R, VOL, is_call))


def _forward_at(spot: float, ts: int) -> float:
    return spot * math.exp(R * (FUT_EXPIRY - ts) / (365 * 86400))


class Feed:
    """Ticks in receive order, ``recv_ts`` strictly increasing."""

    def __init__(self) -> None:
        self.recv = 1

    def tick(self, token: int, ts: int, price: float, *, volume: int = 0, traded_at: int = 0,
             bid: float = np.nan, ask: float = np.nan, mode: int = MODE_FULL) -> np.ndarray:
        out = np.zeros(1, TICK_DTYPE)
        out["instrument_token"], out["mode"], out["exchange_ts"], out["recv_ts"] = token, mode, ts, self.recv
        out["last_price"], out["volume"], out["last_trade_ts"] = price, volume, traded_at
        out["bid"], out["ask"] = bid, ask
        self.recv += 1
        return out

    def option(self, strike: float, is_call: bool, ts: int, forward: float, *, traded_at: int | None = None,
               half_spread: float = 0.05, quoted: bool = True) -> np.ndarray:
        kind = InstrumentKind.CALL if is_call else InstrumentKind.PUT
        price = _model(forward, strike, ts, is_call)
        return self.tick(_token(kind, strike, FUT_EXPIRY), ts, round(price, 2), volume=75,
                         traded_at=ts if traded_at is None else traded_at,
                         bid=price - half_spread if quoted else np.nan, ask=price + half_spread if quoted else np.nan)


def _priced_row(priced: np.ndarray, token: int) -> np.void:
    return priced[priced["instrument_token"] == token][-1]


def test_a_stale_pair_never_sets_the_forward_a_fresh_spot_carry_does() -> None:
    """The issue's case: the ATM pair last traded and quoted 3 minutes ago, the spot up 60 since."""
    feed, price = Feed(), _pricer(INDEX, PricingRules(fresh_s=60))
    f0 = _forward_at(SPOT, T0)
    price(np.concatenate([feed.tick(SPOT_TOKEN, T0, SPOT),
                                 feed.option(24500.0, True, T0, f0), feed.option(24500.0, False, T0, f0)]))
    later = T0 + 180
    f1 = _forward_at(SPOT + 60, later)
    otm_call = feed.option(24800.0, True, later, f1)
    priced = price(np.concatenate([feed.tick(SPOT_TOKEN, later, SPOT + 60), otm_call]))
    row = _priced_row(priced, int(otm_call["instrument_token"][0]))
    assert row["forward_source"] == FORWARD_CARRY
    assert row["forward"] == pytest.approx(f1, rel=1e-12)
    assert row["iv"] == pytest.approx(VOL, abs=2e-3)  # the last trade's own rounding only
    assert row["mid_iv"] == pytest.approx(VOL, abs=1e-9)


def test_fresh_two_sided_mids_give_the_parity_forward() -> None:
    feed, price = Feed(), _pricer(INDEX)
    true_f = _forward_at(SPOT, T0) + 25.0  # the market's forward is not spot carry (dividends, demand)
    strikes = (24300.0, 24400.0, 24500.0, 24600.0, 24700.0)
    ticks = [feed.tick(SPOT_TOKEN, T0, SPOT)]
    ticks += [feed.option(k, c, T0, true_f, half_spread=0.0) for k in strikes for c in (True, False)]
    priced = price(np.concatenate(ticks))
    options = ~np.isnan(priced["forward_source"])
    assert (priced["forward_source"][options] == FORWARD_PARITY).all()
    np.testing.assert_allclose(priced["forward"][options], true_f, rtol=1e-12)


def test_a_fresh_future_wins_and_a_stale_one_falls_back() -> None:
    feed, price = Feed(), _pricer(INDEX, PricingRules(fresh_s=60))
    fut_price = _forward_at(SPOT, T0) + 10.0
    price(np.concatenate([feed.tick(SPOT_TOKEN, T0, SPOT),
                                 feed.tick(FUT_TOKEN, T0, fut_price, volume=50, traded_at=T0)]))
    call = feed.option(24600.0, True, T0 + 30, fut_price)
    row = _priced_row(price(call), int(call["instrument_token"][0]))
    assert (row["forward_source"], row["forward"]) == (FORWARD_FUTURE, fut_price)
    later = T0 + 120  # the future's trade is now 120 s old
    call = feed.option(24600.0, True, later, fut_price)
    row = _priced_row(price(np.concatenate([feed.tick(SPOT_TOKEN, later, SPOT), call])),
                      int(call["instrument_token"][0]))
    assert row["forward_source"] == FORWARD_CARRY
    assert row["forward"] == pytest.approx(_forward_at(SPOT, later), rel=1e-12)


def test_an_option_whose_last_trade_is_old_is_stale_but_keeps_its_iv() -> None:
    feed, price = Feed(), _pricer(INDEX, PricingRules(fresh_s=60))
    f = _forward_at(SPOT, T0 + 300)
    old = feed.option(24500.0, True, T0 + 300, f, traded_at=T0)  # quoted now, last traded 5 minutes ago
    fresh = feed.option(24500.0, False, T0 + 300, f)
    priced = price(np.concatenate([feed.tick(SPOT_TOKEN, T0 + 300, SPOT), old, fresh]))
    stale_row = _priced_row(priced, int(old["instrument_token"][0]))
    fresh_row = _priced_row(priced, int(fresh["instrument_token"][0]))
    assert stale_row["stale"] == 1.0 and np.isfinite(stale_row["iv"])
    assert fresh_row["stale"] == 0.0


def test_an_untraded_option_at_the_open_is_stale_a_quote_mode_volume_rise_is_a_trade() -> None:
    feed, price = Feed(), _pricer(INDEX, PricingRules(fresh_s=60))
    token = _token(InstrumentKind.CALL, 24500.0, FUT_EXPIRY)
    first = feed.tick(token, T0, 180.0, volume=0, mode=MODE_QUOTE)  # yesterday's last price, no trade today
    row = _priced_row(price(np.concatenate([feed.tick(SPOT_TOKEN, T0, SPOT), first])), token)
    assert row["stale"] == 1.0
    traded = feed.tick(token, T0 + 5, 181.0, volume=75, mode=MODE_QUOTE)
    assert _priced_row(price(traded), token)["stale"] == 0.0
    unchanged = feed.tick(token, T0 + 100, 181.0, volume=75, mode=MODE_QUOTE)  # no trade for 95 s
    assert _priced_row(price(unchanged), token)["stale"] == 1.0


@pytest.mark.parametrize(("bid", "ask"), [(np.nan, 181.0), (150.0, 210.0), (0.0, 0.0)],
                         ids=["one-sided", "too-wide", "empty"])
def test_mid_iv_is_null_without_a_tight_two_sided_quote(bid: float, ask: float) -> None:
    feed, price = Feed(), _pricer(INDEX, PricingRules(max_spread=0.1))
    token = _token(InstrumentKind.CALL, 24500.0, FUT_EXPIRY)
    tick = feed.tick(token, T0, 180.0, volume=75, traded_at=T0, bid=bid, ask=ask)
    row = _priced_row(price(np.concatenate([feed.tick(SPOT_TOKEN, T0, SPOT), tick])), token)
    assert np.isnan(row["mid_iv"]) and np.isfinite(row["iv"])


def test_a_quote_older_than_the_freshness_age_gives_no_mid_iv() -> None:
    feed, price = Feed(), _pricer(INDEX, PricingRules(fresh_s=60))
    f = _forward_at(SPOT, T0)
    call = feed.option(24500.0, True, T0, f)
    token = int(call["instrument_token"][0])
    assert np.isfinite(_priced_row(price(np.concatenate([feed.tick(SPOT_TOKEN, T0, SPOT), call])),
                                   token)["mid_iv"])
    ltp_only = feed.tick(token, T0 + 90, 181.0, volume=150, mode=MODE_QUOTE)  # a trade, no depth: the quote ages
    assert np.isnan(_priced_row(price(ltp_only), token)["mid_iv"])


def test_near_expiry_flags_the_last_minutes_before_the_close() -> None:
    feed, price = Feed(), _pricer(INDEX, PricingRules(near_expiry_s=1800))
    token = _token(InstrumentKind.CALL, 24500.0, FUT_EXPIRY)
    early = feed.tick(token, FUT_EXPIRY - 1801, 20.0, volume=75, traded_at=FUT_EXPIRY - 1801)
    late = feed.tick(token, FUT_EXPIRY - 1799, 20.0, volume=150, traded_at=FUT_EXPIRY - 1799)
    spot = feed.tick(SPOT_TOKEN, FUT_EXPIRY - 1801, SPOT)
    priced = price(np.concatenate([spot, early, late]))
    flags = priced["near_expiry"][priced["instrument_token"] == token]
    assert flags.tolist() == [0.0, 1.0]


@pytest.mark.parametrize("kwargs", [{"fresh_s": 0}, {"max_spread": 0}, {"parity_strikes": 0}, {"near_expiry_s": -1}])
def test_bad_pricing_rules_raise_value_error(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        PricingRules(**kwargs)


def test_spot_delta_is_n_d1_for_a_call_and_n_d1_minus_one_for_a_put() -> None:
    feed, price = Feed(), _pricer(INDEX)
    f = _forward_at(SPOT, T0)
    call, put = feed.option(24600.0, True, T0, f), feed.option(24600.0, False, T0, f)
    priced = price(np.concatenate([feed.tick(SPOT_TOKEN, T0, SPOT), call, put]))
    c, p = _priced_row(priced, int(call["instrument_token"][0])), _priced_row(priced, int(put["instrument_token"][0]))
    t = (FUT_EXPIRY - T0) / (365 * 86400)
    for row, is_call in ((c, True), (p, False)):
        sigma = row["iv"]
        d1 = (math.log(row["forward"] / 24600.0) + 0.5 * sigma * sigma * t) / (sigma * math.sqrt(t))
        n_d1 = 0.5 * (1 + math.erf(d1 / math.sqrt(2)))
        assert row["spot_delta"] == pytest.approx(n_d1 if is_call else n_d1 - 1, abs=1e-9)
        assert row["delta"] == pytest.approx(row["spot_delta"] * math.exp(-R * t), abs=1e-12)
