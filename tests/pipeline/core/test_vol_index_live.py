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
from pipeline.sim.market import DEFAULT_UNDERLYINGS, build_instruments, session_start_ts

pytestmark = pytest.mark.unit

DAY = dt.date(2026, 12, 28)  # Monday; weekly NIFTY expiries Tuesdays: Dec 29 (1 day), Jan 5, Jan 12
R, VOL, SPOT = 0.065, 0.18, 24500.0
NOW = int(session_start_ts(DAY)) + 3600
INDEX = InstrumentIndex.from_rows(select_universe(
    build_instruments([DEFAULT_UNDERLYINGS["NIFTY"]], DAY, n_expiries=3, strikes_each_side=40), ["NIFTY"], 3, 40,
    today=DAY))
EXPIRIES = underlying_chains(INDEX, ExpiryChains(INDEX), "NIFTY")


def _book(quote_ts: int = NOW) -> PriceBook:
    """Every option quoted 0.05 either side of its flat-volatility model price (never below a tick)."""
    opt = np.flatnonzero(np.isin(INDEX.kind, (InstrumentKind.CALL, InstrumentKind.PUT)))
    t = (INDEX.expiry_ts[opt] - NOW) / (365 * 86400)
    model = greeks.black76_price(SPOT * np.exp(R * t), INDEX.strike[opt], t, R, VOL,
                                 INDEX.kind[opt] == InstrumentKind.CALL)
    ticks = np.zeros(len(opt), TICK_DTYPE)
    ticks["instrument_token"], ticks["mode"], ticks["exchange_ts"] = INDEX.tokens[opt], MODE_FULL, quote_ts
    ticks["recv_ts"] = np.arange(len(opt)) + 1
    ticks["bid"] = np.where(model - 0.05 >= 0.05, np.round(model - 0.05, 2), 0.0)
    ticks["ask"] = np.maximum(np.round(model + 0.05, 2), 0.05)
    ticks["last_price"] = np.maximum(np.round(model, 2), 0.05)
    book = PriceBook(len(INDEX))
    book.update(INDEX.positions(ticks["instrument_token"]), ticks)
    return book


def test_flat_volatility_chain_gives_back_its_volatility_from_the_rolled_expiries() -> None:
    row = vol_index_row(_book(), EXPIRIES, NOW, R, fresh_s=60, roll_days=3)
    assert row is not None
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


def test_stale_quotes_give_no_index() -> None:
    assert vol_index_row(_book(quote_ts=NOW - 600), EXPIRIES, NOW, R, fresh_s=60, roll_days=3) is None


def test_coarse_rows_only_at_their_closes_with_their_own_bucket() -> None:
    minute = (NOW // 300 + 1) * 300 - 60  # the minute that ends a 5-minute bucket
    rows = vol_index_rows("NIFTY", np.array([minute - 60, minute]), _book(), EXPIRIES, R, fresh_s=600,
                          roll_days=3, intervals_s=(60, 300, 900), last_recv_ts=9)
    by_interval = {int(i): rows["bucket"][rows["interval_s"] == i].tolist() for i in np.unique(rows["interval_s"])}
    assert by_interval[60] == [minute - 60, minute]
    assert by_interval[300] == [minute + 60 - 300]
    assert (900 in by_interval) == ((minute + 60) % 900 == 0)
    assert set(rows["last_recv_ts"].tolist()) == {9} and set(rows["underlying"].tolist()) == {b"NIFTY"}
