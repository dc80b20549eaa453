"""The live 30-day volatility index of an underlying at each bar close (pure: numpy, no I/O, no clock).

docs/design.md "Definitions" (the Cboe VIX method NSE's India VIX follows; the formulas are
``greeks.expiry_variance`` and ``greeks.vol_index``), applied at the close of every 1-minute bucket
``b`` (exchange time ``now = b + 60``):

- Expiries: the underlying's option expiries with both calls and puts listed, in order; ``near`` is the
  first at least ``roll_days`` calendar days (to 15:30 IST of the expiry day) after ``now``, ``next``
  the one after it. Closer expiries are rolled over, as NSE rolls before the near expiry.
- Quotes: each strike's best bid and ask from the price book as of the close (the book when the bucket
  closed: every tick received up to the record that closed it, at most the grace later), used only
  when fresh (quoted no more than ``fresh_s`` before ``now``), two-sided and not crossed; any other
  quote counts as a zero bid, so the strike is skipped and, twice in a row, ends the walk outward.
- Forward: put-call parity at the strike whose call and put mids are closest (``expiry_variance``).
- ``vix`` in volatility points, interpolated to ``target_days`` (30) calendar days; no row when
  either expiry has no usable quotes.
- 5- and 15-minute rows are the 1-minute row of the minute that closes them (the same instant),
  labelled with their own bucket.

Units: ``bucket`` epoch seconds (interval start), variances annualised, forwards rupees,
``last_recv_ts`` epoch microseconds (the version, as on every rollup row).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np

import greeks
from pipeline.core.price_book import PriceBook
from pipeline.core.pricing import Chain, ExpiryChains
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.rollups import VOL_INDEX_DTYPE
from pipeline.records.time_units import IST, SECONDS_PER_DAY, SECONDS_PER_YEAR

MINUTE_S = 60


def expiry_label(expiry_ts: int) -> bytes:
    """The expiry's date as the rollup rows label it (b'YYYY-MM-DD', IST)."""
    return dt.datetime.fromtimestamp(int(expiry_ts), IST).strftime("%Y-%m-%d").encode()


def usable_quotes(book: PriceBook, rows: np.ndarray, now: int, fresh_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(bid, ask) of book ``rows`` where the quote is fresh at ``now``, two-sided and not crossed; 0, 0 elsewhere."""
    ok = book.fresh_two_sided(rows, now, fresh_s)
    return np.where(ok, book.bid[rows], 0.0), np.where(ok, book.ask[rows], 0.0)


def underlying_chains(index: InstrumentIndex, chains: ExpiryChains, underlying: str) -> list[tuple[int, Chain]]:
    """(expiry close epoch s, chain) of the underlying's expiries with strikes listed on both sides, in order."""
    out = []
    for chain in chains.chains:
        if len(chain.strikes) and index.underlying[chain.call_rows[0]] == underlying:
            out.append((int(index.expiry_ts[chain.call_rows[0]]), chain))
    return sorted(out, key=lambda pair: pair[0])


def vol_index_row(book: PriceBook, expiries: Sequence[tuple[int, Chain]], now: int, r: float, fresh_s: float,
                  roll_days: float, target_days: float = 30.0) -> np.void | None:
    """The index at exchange time ``now`` (one ``VOL_INDEX_DTYPE`` row without key and version), or None."""
    usable = [(e, c) for e, c in expiries if e - now >= roll_days * SECONDS_PER_DAY]
    if len(usable) < 2:
        return None
    row = np.zeros(1, VOL_INDEX_DTYPE)[0]
    results = []
    for (expiry, chain), side in zip(usable[:2], ("near", "next"), strict=True):
        t = (expiry - now) / SECONDS_PER_YEAR
        call_bid, call_ask = usable_quotes(book, chain.call_rows, now, fresh_s)
        put_bid, put_ask = usable_quotes(book, chain.put_rows, now, fresh_s)
        try:
            result = greeks.expiry_variance(chain.strikes, call_bid, call_ask, put_bid, put_ask, t, r)
        except ValueError:
            return None  # no strike quoted on both sides: no forward, no index
        results.append((t, result))
        row[f"{side}_expiry"] = expiry_label(expiry)
        row[f"{side}_variance"], row[f"forward_{side}"] = result.variance, result.forward
        row[f"strikes_used_{side}"] = result.strikes_used
    (t1, near), (t2, nxt) = results
    try:
        row["vix"] = greeks.vol_index(t1, near.variance, t2, nxt.variance, target_days)
    except ValueError:
        return None
    return row


def vol_index_rows(underlying: str, closed_minutes: np.ndarray, book: PriceBook,
                   expiries: Sequence[tuple[int, Chain]], r: float, fresh_s: float, roll_days: float,
                   intervals_s: Sequence[int], last_recv_ts: int) -> np.ndarray:
    """``VOL_INDEX_DTYPE`` rows of every interval closed by the 1-minute buckets ``closed_minutes`` (epoch s)."""
    rows = []
    for minute in sorted(set(int(m) for m in closed_minutes)):
        now = minute + MINUTE_S
        value = vol_index_row(book, expiries, now, r, fresh_s, roll_days)
        if value is None:
            continue
        for interval in intervals_s:
            if now % interval == 0:
                row = value.copy()
                row["underlying"], row["interval_s"], row["bucket"] = underlying.encode(), interval, now - interval
                row["last_recv_ts"] = last_recv_ts
                rows.append(row)
    return np.array(rows, VOL_INDEX_DTYPE) if rows else np.empty(0, VOL_INDEX_DTYPE)
