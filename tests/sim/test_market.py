import datetime as dt

import numpy as np
import pytest

from pipeline.feed.kite_codec import decode_frame
from pipeline.feed.kite_encode import encode_frame
from pipeline.feed.kite_wire import MODE_FULL, MODE_LTP, MODE_QUOTE
from sim.market import (
    DEFAULT_UNDERLYINGS,
    Market,
    build_instruments,
    session_start_ts,
)

pytestmark = pytest.mark.unit

DAY = dt.date(2026, 11, 23)
NEXT_TRADING_DAY = dt.date(2026, 11, 25)  # the 24th is an NSE holiday (Guru Nanak Jayanti)


def _market(seed: int = 7) -> Market:
    specs = list(DEFAULT_UNDERLYINGS.values())
    rows = build_instruments(specs, DAY, n_expiries=2, strikes_each_side=8)
    return Market(rows, specs, session_start_ts(DAY), seed=seed)


def _run(market: Market, steps: int = 200) -> list[np.ndarray]:
    snaps = []
    rows = np.arange(len(market))
    for i in range(1, steps + 1):
        market.advance(market.now + 6.0)
        traded = rows[market.rng.random(len(rows)) < 0.3]
        market.trade(traded)
        snaps.append(market.snapshot(rows, MODE_FULL))
    return snaps


def test_same_seed_same_market_different_seed_different_market() -> None:
    a, b, c = _run(_market(3), 20), _run(_market(3), 20), _run(_market(4), 20)
    assert np.array_equal(a[-1]["last_price"], b[-1]["last_price"])
    assert not np.array_equal(a[-1]["last_price"], c[-1]["last_price"])


def test_volume_never_decreases_and_oi_moves_in_lots() -> None:
    market = _market()
    snaps = _run(market)
    volume = np.stack([s["volume_traded"] for s in snaps]).astype(np.int64)
    assert (np.diff(volume, axis=0) >= 0).all()
    tradable = snaps[-1]["tradable"]
    oi = np.stack([s["oi"] for s in snaps])[:, tradable].astype(np.int64)
    assert (oi % market.lot[tradable] == 0).all() and (oi >= 0).all()
    assert (np.diff(oi, axis=0) != 0).any()


def test_option_prices_respect_no_arbitrage_bounds_and_parity() -> None:
    """The model prices (what the quotes sit around and every trade is done at) are arbitrage-free."""
    market = _market()
    _run(market, 50)
    snap = {"last_price": market.price.copy()}
    t = (market.expiry_ts - market.now) / (365 * 86400)
    spot = np.array([market.spot[u] for u in market.underlying])
    forward = spot * np.exp(market.r * t)
    disc = np.exp(-market.r * t)
    opt = market.is_option
    price = snap["last_price"][opt]
    intrinsic = np.where(market.is_call[opt], forward[opt] - market.strike[opt], market.strike[opt] - forward[opt])
    assert (price >= disc[opt] * np.maximum(intrinsic, 0) - 0.05 - 1e-9).all()
    assert (price <= np.where(market.is_call[opt], forward[opt], market.strike[opt])).all()
    # put-call parity within rounding to the tick: C - P = disc (F - K)
    calls = np.flatnonzero(market.is_call)
    for c in calls[:20]:
        p = np.flatnonzero(~market.is_call & opt & (market.strike == market.strike[c])
                           & (market.expiry_ts == market.expiry_ts[c]) & (market.underlying == market.underlying[c]))[0]
        lhs = snap["last_price"][c] - snap["last_price"][p]
        rhs = disc[c] * (forward[c] - market.strike[c])
        if min(snap["last_price"][c], snap["last_price"][p]) > 0.05:
            assert abs(lhs - rhs) <= 0.05 + 1e-9


def test_quotes_move_with_the_index_between_trades_and_last_price_stays_the_last_trade() -> None:
    market = _market()
    rows = np.flatnonzero(market.is_option)[:10]
    market.trade(rows)
    traded_at = market.snapshot(rows, MODE_FULL)
    market.advance(market.now + 600)  # ten minutes, no trade of these rows
    later = market.snapshot(rows, MODE_FULL)
    np.testing.assert_array_equal(later["last_price"], traded_at["last_price"])
    np.testing.assert_array_equal(later["last_trade_time"], traded_at["last_trade_time"])
    mids = (later["bid_price"][:, 0] + later["ask_price"][:, 0]) / 2
    assert (np.abs(mids - market.price[rows]) <= 0.1 + 1e-9).all()  # the quotes follow the model price
    assert (later["bid_price"][:, 0] != traded_at["bid_price"][:, 0]).any()


def test_ticks_outside_the_session_never_trade_and_a_new_day_resets_volume() -> None:
    market = _market()
    rows = np.flatnonzero(~market.is_index)
    market.trade(rows)
    assert (market.volume[rows] > 0).all()
    close = session_start_ts(DAY) + 6 * 3600 + 15 * 60 + 1  # 15:30:01 IST
    market.advance(close)
    assert market.liquidity.sum() == 0  # the feed is quiet after the close
    assert len(market.tick(rows)) == 0
    last = market.last_trade_price.copy()
    next_open = session_start_ts(NEXT_TRADING_DAY)
    market.advance(next_open)
    assert (market.volume[rows] == 0).all()
    np.testing.assert_array_equal(market.prev_close[rows], last[rows])
    assert len(market.tick(rows)) > 0


def test_a_holiday_has_no_session() -> None:
    market = _market()
    market.advance(session_start_ts(dt.date(2026, 11, 24)) + 3600)  # 10:15 IST on the holiday
    assert market.liquidity.sum() == 0 and len(market.tick(np.flatnonzero(~market.is_index))) == 0


def test_pre_open_moves_only_the_index() -> None:
    market = _market()
    market.advance(session_start_ts(NEXT_TRADING_DAY) - 10 * 60)  # 09:05 IST the next trading day
    assert (market.liquidity[~market.is_index] == 0).all() and (market.liquidity[market.is_index] > 0).all()
    assert len(market.tick(np.flatnonzero(~market.is_index))) == 0


def test_depth_brackets_the_price_with_bids_below_asks() -> None:
    snap = _market().snapshot(np.arange(10), MODE_FULL)
    tradable = snap[snap["tradable"]]
    assert (tradable["bid_price"][:, 0] < tradable["ask_price"][:, 0]).all()
    assert (np.diff(tradable["bid_price"], axis=1) <= 0).all() and (np.diff(tradable["ask_price"], axis=1) > 0).all()


@pytest.mark.parametrize("mode", [MODE_LTP, MODE_QUOTE, MODE_FULL])
def test_snapshot_in_every_mode_survives_the_wire(mode: int) -> None:
    market = _market()
    _run(market, 5)
    snap = market.snapshot(np.arange(len(market)), mode)
    back = decode_frame(encode_frame(snap))
    np.testing.assert_allclose(back["last_price"], snap["last_price"], atol=1e-9)
    assert back["instrument_token"].tolist() == snap["instrument_token"].tolist()
    assert (back["mode"] == mode).all()


def test_liquidity_near_the_money_ticks_far_more_often_than_far_strikes() -> None:
    specs = [DEFAULT_UNDERLYINGS["NIFTY"]]
    market = Market(build_instruments(specs, DAY, n_expiries=2, strikes_each_side=60), specs, session_start_ts(DAY))
    near = market.is_option & (market._expiry_rank == 0)  # noqa: SLF001
    distance = np.abs(market.strike - market.spot["NIFTY"])
    atm = near & (distance <= 50)
    far = near & (distance >= 2000)
    assert atm.any() and far.any()
    assert market.liquidity[atm].min() > 100 * market.liquidity[far].max()
    # a later expiry ticks less than the same strike of the nearest
    later = market.is_option & (market._expiry_rank == 1) & (distance <= 50)  # noqa: SLF001
    assert market.liquidity[later].max() < market.liquidity[atm].max()
    assert (market.liquidity > 0).all()


def test_every_default_underlying_builds_a_chain_with_positive_strikes() -> None:
    specs = list(DEFAULT_UNDERLYINGS.values())
    rows = build_instruments(specs, DAY, n_expiries=1, strikes_each_side=200)
    assert {r["name"] for r in rows if r["segment"] != "INDICES"} == set(DEFAULT_UNDERLYINGS)
    assert all(r["strike"] > 0 for r in rows if r["instrument_type"] in ("CE", "PE"))
    assert len({r["instrument_token"] for r in rows}) == len(rows)


def test_around_the_clock_trades_at_night_and_on_holidays() -> None:
    specs = [DEFAULT_UNDERLYINGS["NIFTY"]]
    rows = build_instruments(specs, DAY, n_expiries=1, strikes_each_side=2)
    night_on_a_holiday = session_start_ts(dt.date(2026, 11, 24)) - 8 * 3600  # 01:15 IST
    market = Market(rows, specs, night_on_a_holiday, seed=3, around_the_clock=True)
    assert market.liquidity.sum() > 0
    assert len(market.tick(np.flatnonzero(~market.is_index))) > 0
    closed = Market(rows, specs, night_on_a_holiday, seed=3)
    assert closed.liquidity.sum() == 0
