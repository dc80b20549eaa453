"""Builders shared by the sink tests (plain functions, no servers)."""

from __future__ import annotations

import datetime as dt

import numpy as np

from pipeline.records.bars import BAR_DTYPE
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.ticks import (
    CLOSE_FIELDS,
    FORWARD_FUTURE,
    FORWARD_PARITY,
    GREEK_FIELDS,
    PRICED_TICK_DTYPE,
)

EXPIRY = dt.date(2030, 1, 31)
SPOT, FUT, CALL, PUT = 256265, 1001, 2001, 2002


def instrument_rows() -> list[dict]:
    """Kite ``instruments()`` style dicts: index, future, one call/put pair."""
    common = {"tick_size": 0.05, "last_price": 0.0, "exchange": "NFO", "segment": "NFO-OPT"}
    return [
        {"instrument_token": SPOT, "exchange_token": "1001", "tradingsymbol": "NIFTY 50", "name": "NIFTY 50",
         "last_price": 22000.0, "expiry": "", "strike": 0.0, "tick_size": 0.0, "lot_size": 0,
         "instrument_type": "EQ", "segment": "INDICES", "exchange": "NSE"},
        {**common, "instrument_token": FUT, "exchange_token": "3", "tradingsymbol": "NIFTY30JANFUT", "name": "NIFTY",
         "expiry": EXPIRY, "strike": 0.0, "lot_size": 75, "instrument_type": "FUT", "segment": "NFO-FUT"},
        {**common, "instrument_token": CALL, "exchange_token": "7", "tradingsymbol": "NIFTY30JAN22000CE",
         "name": "NIFTY", "expiry": EXPIRY, "strike": 22000.0, "lot_size": 75, "instrument_type": "CE"},
        {**common, "instrument_token": PUT, "exchange_token": "8", "tradingsymbol": "NIFTY30JAN22000PE",
         "name": "NIFTY", "expiry": EXPIRY, "strike": 22000.0, "lot_size": 75, "instrument_type": "PE"},
    ]


def index() -> InstrumentIndex:
    return InstrumentIndex.from_rows(instrument_rows())


def bars(interval_s: int = 60, tokens=(CALL,), bucket: int = 1_900_000_020, last_recv_ts: int = 1_900_000_059_123_456,
         close: float = 100.0) -> np.ndarray:
    out = np.zeros(len(tokens), dtype=BAR_DTYPE)
    out["instrument_token"] = tokens
    out["interval_s"] = interval_s
    out["bucket"] = bucket // interval_s * interval_s
    out["open"], out["high"], out["low"], out["close"] = close - 1, close + 2, close - 2, close
    out["volume"] = 1500
    out["oi"], out["oi_open"], out["oi_high"], out["oi_low"] = 9000, 8000, 9100, 7900
    out["vwap"] = close - 0.5
    out["tick_count"] = 42
    out["last_recv_ts"] = last_recv_ts
    for name in GREEK_FIELDS:
        out[name] = 0.1
    out["forward"] = 22100.0
    out["iv"] = 0.15
    out["mid_iv"] = 0.149
    out["forward_source"] = FORWARD_PARITY
    out["stale"] = 0.0
    out["near_expiry"] = 0.0
    return out


def ticks(tokens=(SPOT, FUT, CALL, PUT), recv_start: int = 1_900_000_000_000_001, price: float = 100.0) -> np.ndarray:
    n = len(tokens)
    out = np.zeros(n, dtype=PRICED_TICK_DTYPE)
    out["instrument_token"] = tokens
    out["mode"] = 3
    out["exchange_ts"] = recv_start // 1_000_000
    out["recv_ts"] = recv_start + np.arange(n)
    out["last_price"] = price + np.arange(n)
    out["volume"] = 1000 + np.arange(n)
    out["oi"] = 500
    out["bid"] = out["last_price"] - 0.05
    out["ask"] = np.nan
    for name in CLOSE_FIELDS:
        out[name] = np.nan
    options = np.isin(out["instrument_token"], [CALL, PUT])
    out["forward"][options] = 22100.0
    out["forward_source"][options] = FORWARD_FUTURE
    out["iv"][options] = 0.14
    out["mid_iv"][options] = 0.141
    out["stale"][options] = 0.0
    out["near_expiry"][options] = 0.0
    out["delta"][options] = 0.5
    return out
