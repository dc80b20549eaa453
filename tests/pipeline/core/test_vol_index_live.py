"""The live volatility index at bar closes (``pipeline.core.vol_index_live``) against ``greeks`` applied plainly
to the same quotes, on a flat-volatility Black-76 chain quoted a tick either side of the model."""

import datetime as dt
import math

import numpy as np
import pytest

import greeks
from pipeline.core.price_book import PriceBook
from pipeline.core.pricing import ExpiryChains
from pipeline.core.vol_index_live import (
    underlying_chains,
    vol_index_row,
    vol_index_rows,
)
from pipeline.feed.instruments import select_universe
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.kinds import InstrumentKind
from pipeline.records.ticks import MODE_FULL, TICK_DTYPE
from sim.market import DEFAULT_UNDERLYINGS, build_instruments, session_start_ts

pytestmark = pytest.mark.unit

DAY = dt.date(2026, 12, 28)  # Monday; weekly NIFTY expiries Tuesdays: Dec 29 (1 day), Jan 5, Jan 12
R, VOL, SPOT = 0.065, 0.18, 24500.0
NOW = int(session_start_ts(DAY)) + 3600
INDEX = InstrumentIndex.from_rows(select_universe(
    build_instruments([DEFAULT_UNDERLYINGS["NIFTY"]], DAY, n_expiries=3, strikes_each_side=40), ["NIFTY"], 3, 40,
    today=DAY))
EXPIRIES = underlying_chains(INDEX, ExpiryChains(INDEX), "NIFTY")


def _book(quote_ts: int = NOW, only: np.ndarray | None = None, book: PriceBook | None = None) -> PriceBook:
    """Every option (or the index rows ``only``) quoted 0.05 either side of its flat-volatility model price
    (never below a tick) at exchange time ``quote_ts``, into ``book`` (a new one by default)."""
    opt = np.flatnonzero(np.isin(INDEX.kind, (InstrumentKind.CALL, InstrumentKind.PUT)))
    opt = opt if only is None else np.intersect1d(opt, only)
    t = (INDEX.expiry_ts[opt] - NOW) / (365 * 86400)
    model = greeks.black76_price(SPOT * np.exp(R * t), INDEX.strike[opt], t, R, VOL,
                                 INDEX.kind[opt] == InstrumentKind.CALL)
    ticks = np.zeros(len(opt), TICK_DTYPE)
    ticks["instrument_token"], ticks["mode"], ticks["exchange_ts"] = INDEX.tokens[opt], MODE_FULL, quote_ts
    ticks["recv_ts"] = np.arange(len(opt)) + 1
    ticks["bid"] = np.where(model - 0.05 >= 0.05, np.round(model - 0.05, 2), 0.0)
    ticks["ask"] = np.maximum(np.round(model + 0.05, 2), 0.05)
    ticks["last_price"] = np.maximum(np.round(model, 2), 0.05)
    book = PriceBook(len(INDEX)) if book is None else book
    book.update(INDEX.positions(ticks["instrument_token"]), ticks)
    return book


def test_flat_volatility_chain_gives_back_its_volatility_from_the_rolled_expiries() -> None:
    row = vol_index_row(_book(), EXPIRIES, NOW, R, fresh_s=60, roll_days=3)
    assert not isinstance(row, str), row
    assert row["near_expiry"].decode() == "2027-01-05" and row["next_expiry"].decode() == "2027-01-12"
    assert math.isclose(row["vix"], 100 * VOL, abs_tol=0.3)
    assert row["strikes_used_near"] > 20 and row["strikes_used_next"] > 20


def test_index_equals_greeks_applied_plainly_to_the_book_quotes() -> None:
    book = _book()
    row = vol_index_row(book, EXPIRIES, NOW, R, fresh_s=60, roll_days=0)  # no roll: Dec 29 and Jan 5
    parts = []
    for expiry, chain in EXPIRIES[:2]:
        t = (expiry - NOW) / (365 * 86400)
        v = greeks.expiry_variance(chain.strikes, book.bid[chain.call_rows], book.ask[chain.call_rows],
                                   book.bid[chain.put_rows], book.ask[chain.put_rows], t, R)
        parts.append((t, v))
    (t1, v1), (t2, v2) = parts
    assert row["near_expiry"].decode() == "2026-12-29"
    assert row["near_variance"] == v1.variance and row["forward_next"] == v2.forward
    assert row["vix"] == greeks.vol_index(t1, v1.variance, t2, v2.variance, 30)


def test_quotes_not_updated_are_still_the_standing_quotes_and_the_index_does_not_move() -> None:
    """Far strikes quoted 10 minutes ago, near ones just now, the same prices: the same index as a book quoted
    entirely now (before, the old quotes dropped out and the index jumped with the wings' freshness)."""
    near_money = np.flatnonzero(np.abs(INDEX.strike - SPOT) <= 300)
    mixed = _book(quote_ts=NOW, only=near_money, book=_book(quote_ts=NOW - 600))
    now_row, mixed_row = (vol_index_row(b, EXPIRIES, NOW, R, fresh_s=60, roll_days=3) for b in (_book(), mixed))
    assert mixed_row["vix"] == now_row["vix"] and mixed_row["strikes_used_near"] == now_row["strikes_used_near"]
    a_minute_later = vol_index_row(mixed, EXPIRIES, NOW + 60, R, fresh_s=60, roll_days=3)
    assert a_minute_later["strikes_used_near"] == now_row["strikes_used_near"]
    assert abs(a_minute_later["vix"] - now_row["vix"]) < 0.01  # only a minute of time to expiry changed


def test_too_few_out_of_the_money_strikes_give_no_row_and_a_reason() -> None:
    near_money = np.flatnonzero(np.abs(INDEX.strike - SPOT) <= 100)  # k0 and a strike or two each side
    assert vol_index_row(_book(only=near_money), EXPIRIES, NOW, R, fresh_s=60, roll_days=3) == "few_strikes"
    skipped: dict[str, int] = {}
    rows = vol_index_rows("NIFTY", np.array([NOW - 60]), _book(only=near_money), EXPIRIES, R, 60, 3, (60,), 1,
                          skipped=skipped)
    assert len(rows) == 0 and skipped == {"few_strikes": 1}


def test_a_fresh_near_future_is_the_forward() -> None:
    book = _book()
    expiry, chain = EXPIRIES[0]  # Dec 29: December's monthly, with its future (no roll below, so it is the near)
    assert len(chain.future_rows)
    future = np.zeros(1, TICK_DTYPE)
    future["instrument_token"], future["mode"], future["exchange_ts"], future["recv_ts"] = (
        INDEX.tokens[chain.future_rows[0]], MODE_FULL, NOW - 5, 10**9)
    future["last_price"], future["volume"], future["last_trade_ts"] = 24_612.5, 100, NOW - 5
    future["bid"] = future["ask"] = np.nan
    book.update(INDEX.positions(future["instrument_token"]), future)
    row = vol_index_row(book, EXPIRIES, NOW, R, fresh_s=60, roll_days=0)
    assert row["near_expiry"].decode() == INDEX.expiry[chain.call_rows[0]] and row["forward_near"] == 24_612.5
    stale = vol_index_row(book, EXPIRIES, NOW + 120, R, fresh_s=60, roll_days=0)  # the trade is 2 minutes old
    assert stale["forward_near"] != 24_612.5  # parity again


def test_coarse_rows_only_at_their_closes_with_their_own_bucket() -> None:
    minute = (NOW // 300 + 1) * 300 - 60  # the minute that ends a 5-minute bucket
    rows = vol_index_rows("NIFTY", np.array([minute - 60, minute]), _book(), EXPIRIES, R, fresh_s=600,
                          roll_days=3, intervals_s=(60, 300, 900), last_recv_ts=9)
    by_interval = {int(i): rows["bucket"][rows["interval_s"] == i].tolist() for i in np.unique(rows["interval_s"])}
    assert by_interval[60] == [minute - 60, minute]
    assert by_interval[300] == [minute + 60 - 300]
    assert (900 in by_interval) == ((minute + 60) % 900 == 0)
    assert set(rows["last_recv_ts"].tolist()) == {9} and set(rows["underlying"].tolist()) == {b"NIFTY"}
