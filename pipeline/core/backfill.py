"""Bars from historical minute candles, for ``strikeflow backfill`` (pure: numpy only, no I/O, no clock).

A candle (Kite's historical API, ``minute`` interval, ``oi=1``) is one instrument's minute: open, high,
low, close of its trades, the volume traded in the minute and the OI at its end, labelled by the
minute's start. It becomes a 1-minute bar (``BAR_DTYPE``) with:

- open/high/low/close, volume, oi from the candle; oi_open = oi_high = oi_low = oi (a candle has no
  OI path); vwap NaN (a candle has no turnover); tick_count 0 (no ticks: any live bar has more and
  replaces it); ``last_recv_ts`` the time the candles were fetched (epoch µs, given);
- the forward, IV and Greeks of the option's close against the same minute's forward (docs/design.md
  "Pricing model", at the minute's close ``bucket + 60``): the same-expiry future's candle close of
  that minute; else put-call parity over the closes of the calls and puts that traded in that minute
  (the nearest ``near`` strikes, median); else the index's close of the minute carried; ``stale`` 0
  (the close traded in the minute), ``mid_iv`` NaN (no quotes), ``near_expiry`` as live.

Coarser bars (5, 15 minutes) come from ``combine`` over the 1-minute bars of their bucket, live and
historical alike, exactly as the worker combines them (``pipeline.core.bars.combine``).
"""

from __future__ import annotations

import numpy as np

import greeks
from pipeline.core.bars.combine import combine
from pipeline.core.pricing import (
    FORWARD_SOURCE_CODES,
    Chain,
    ExpiryChains,
    PricingRules,
    first_positive,
)
from pipeline.records.bars import BAR_DTYPE, CHECKED_DTYPE
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.kinds import InstrumentKind
from pipeline.records.ticks import CLOSE_FIELDS

MINUTE_S = 60
# A request settles only the minutes that had ended this long before it (Kite may still be writing the newest
# candles); later minutes are asked for again next time.
CANDLE_SETTLE_S = 120


def gap_minutes(tokens: np.ndarray, minutes: np.ndarray, stored: np.ndarray,
                checked: np.ndarray) -> dict[int, np.ndarray]:
    """Per token, the session ``minutes`` (epoch s) with no ``stored`` 1-minute bar that no ``checked`` span
    (``CHECKED_DTYPE``) covers: the minutes to ask Kite for. Tokens without any are absent."""
    out = {}
    for token in tokens.tolist():
        missing = np.setdiff1d(minutes, stored["bucket"][stored["instrument_token"] == token])
        for span in checked[checked["instrument_token"] == token]:
            missing = missing[(missing < span["since"]) | (missing >= span["until"])]
        if len(missing):
            out[int(token)] = missing
    return out


def settled_spans(asked: dict[int, np.ndarray], fetched_s: float, settle_s: float = CANDLE_SETTLE_S) -> np.ndarray:
    """The spans the requests for ``asked`` minutes settled, as ``CHECKED_DTYPE``: per token, from its first
    asked minute to the end of its last, cut at the last minute that ended ``settle_s`` before ``fetched_s``."""
    limit = int((fetched_s - settle_s) // MINUTE_S * MINUTE_S)
    spans = [(token, int(m[0]), min(int(m[-1]) + MINUTE_S, limit)) for token, m in asked.items()]
    return np.array([s for s in spans if s[2] > s[1]], dtype=CHECKED_DTYPE)


def candle_bars(candles: np.ndarray, fetched_us: int) -> np.ndarray:
    """``CANDLE_DTYPE`` rows (``pipeline.records.bars``) -> 1-minute ``BAR_DTYPE`` bars without Greeks (NaN), sorted by (bucket, token)."""
    c = candles[np.lexsort((candles["instrument_token"], candles["bucket"]))]
    out = np.zeros(len(c), BAR_DTYPE)
    for name in ("instrument_token", "bucket", "open", "high", "low", "close", "volume", "oi"):
        out[name] = c[name]
    out["interval_s"] = MINUTE_S
    out["oi_open"] = out["oi_high"] = out["oi_low"] = c["oi"]
    out["vwap"] = np.nan
    out["last_recv_ts"] = int(fetched_us)
    for name in CLOSE_FIELDS:
        out[name] = np.nan
    return out


def price_minute_bars(bars: np.ndarray, index: InstrumentIndex, r: float, rules: PricingRules) -> np.ndarray:
    """A copy of 1-minute ``bars`` with forward, IV, Greeks and flags of every option's close (see module doc)."""
    out = bars.copy()
    pos = index.positions(out["instrument_token"])
    chains = ExpiryChains(index)
    chain_of = np.where(pos >= 0, chains.chain_of[np.where(pos >= 0, pos, 0)], -1)
    for bucket in np.unique(out["bucket"]).tolist():
        rows = np.flatnonzero(out["bucket"] == bucket)
        close_at = np.full(len(index), np.nan)
        known = rows[pos[rows] >= 0]
        close_at[pos[known]] = out["close"][known]
        for chain in np.unique(chain_of[rows][chain_of[rows] >= 0]).tolist():
            sel = rows[chain_of[rows] == chain]
            _price_chain(out, sel, pos[sel], chains.chains[chain], close_at, bucket + MINUTE_S, index, r, rules)
    return out


def _price_chain(out: np.ndarray, sel: np.ndarray, p: np.ndarray, chain: Chain, close_at: np.ndarray, now: int,
                 index: InstrumentIndex, r: float, rules: PricingRules) -> None:
    """Price the option bars ``sel`` (index rows ``p``) of one chain at exchange time ``now``."""
    t = greeks.years_to_expiry(now, index.expiry_ts[p])
    choice = greeks.forward_for_expiry(
        t, r, future_price=first_positive(close_at[chain.future_rows]), strikes=chain.strikes,
        call_prices=close_at[chain.call_rows], put_prices=close_at[chain.put_rows],
        spot=first_positive(close_at[chain.spot_rows]), near=rules.parity_strikes)
    forward, strike = choice.forward, index.strike[p]
    is_call = index.kind[p] == InstrumentKind.CALL
    iv = greeks.implied_vol(out["close"][sel], forward, strike, t, r, is_call)
    g = greeks.black76_greeks(forward, strike, t, r, iv, is_call)
    out["forward"][sel], out["iv"][sel] = forward, iv
    out["forward_source"][sel] = FORWARD_SOURCE_CODES[choice.source]
    for name in ("delta", "gamma", "theta", "vega", "rho"):
        out[name][sel] = getattr(g, name)
    out["spot_delta"][sel] = g.delta * np.exp(r * t)
    out["stale"][sel] = 0.0
    out["near_expiry"][sel] = (index.expiry_ts[p] - now) <= rules.near_expiry_s


def coarse_bars(minute_bars: np.ndarray, interval_s: int) -> np.ndarray:
    """``interval_s`` bars combined from 1-minute bars (``BAR_DTYPE``, any instruments and buckets), one per
    instrument and coarse bucket present."""
    buckets = minute_bars["bucket"] // interval_s * interval_s
    parts = [combine(minute_bars[buckets == b], interval_s, int(b), 0) for b in np.unique(buckets).tolist()]
    return np.concatenate(parts) if parts else np.empty(0, BAR_DTYPE)
