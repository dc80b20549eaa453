"""The live 30-day volatility index of an underlying at each bar close (pure: numpy, no I/O, no clock).

docs/design.md "Definitions" (the Cboe VIX method NSE's India VIX follows; the formulas are
``greeks.expiry_variance`` and ``greeks.vol_index``), applied at the close of every 1-minute bucket
``b`` (exchange time ``now = b + 60``):

- Expiries: the underlying's option expiries with both calls and puts listed, in order; ``near`` is the
  first at least ``roll_days`` calendar days (to 15:30 IST of the expiry day) after ``now``, ``next``
  the one after it. Closer expiries are rolled over, as NSE rolls before the near expiry.
- Quotes: each strike's standing best bid and ask from the price book as of the close (the book when the
  bucket closed: every tick received up to the record that closed it, at most the grace later), two-sided
  and not crossed, whatever their age: Kite sends a tick when something changes, so a quote not updated
  for a minute is still the quote (unlike the pricer's freshness rule, which is about trades and the
  forward now: an old trade says nothing of the price now, an unchanged quote does). So the index does
  not move when nothing in the market moved. Any other quote counts as a zero bid: the strike is skipped
  and, twice in a row, ends the walk outward.
- Forward: the expiry's future's last trade when it is fresh (no older than ``fresh_s``), as NSE does; else
  put-call parity at the strike whose call and put mids are closest (``expiry_variance``).
- A row needs, for each expiry, at least ``min_strikes`` out-of-the-money puts and as many calls with
  non-zero bids on the two sides of k0, and a positive variance; otherwise there is no row for that minute
  and the reason is counted (``skipped``): one usable strike once published an index of 17.01 where 15.00
  was right.
- ``vix`` in volatility points, interpolated to ``target_days`` (30) calendar days.
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


def standing_quotes(book: PriceBook, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bid, ask) of book ``rows`` where the standing quote is two-sided and not crossed; 0, 0 elsewhere."""
    bid, ask = book.bid[rows], book.ask[rows]
    with np.errstate(invalid="ignore"):
        ok = (bid > 0) & (ask >= bid)
    return np.where(ok, bid, 0.0), np.where(ok, ask, 0.0)


def _future_forward(book: PriceBook, chain: Chain, now: int, fresh_s: float) -> float | None:
    """The expiry's future's last trade when fresh at ``now``, else None (parity decides)."""
    fresh = chain.future_rows[book.fresh_trade(chain.future_rows, now, fresh_s)]
    return float(book.last_price[fresh[0]]) if len(fresh) else None


def underlying_chains(index: InstrumentIndex, chains: ExpiryChains, underlying: str) -> list[tuple[int, Chain]]:
    """(expiry close epoch s, chain) of the underlying's expiries with strikes listed on both sides, in order."""
    out = []
    for chain in chains.chains:
        if len(chain.strikes) and index.underlying[chain.call_rows[0]] == underlying:
            out.append((int(index.expiry_ts[chain.call_rows[0]]), chain))
    return sorted(out, key=lambda pair: pair[0])


def vol_index_row(book: PriceBook, expiries: Sequence[tuple[int, Chain]], now: int, r: float, fresh_s: float,
                  roll_days: float, target_days: float = 30.0, min_strikes: int = 3) -> np.void | str:
    """The index at exchange time ``now`` (one ``VOL_INDEX_DTYPE`` row without key and version), or the reason
    there is none (``no_expiries``, ``no_quotes``, ``few_strikes``, ``negative_variance``)."""
    usable = [(e, c) for e, c in expiries if e - now >= roll_days * SECONDS_PER_DAY]
    if len(usable) < 2:
        return "no_expiries"
    row = np.zeros(1, VOL_INDEX_DTYPE)[0]
    results = []
    for (expiry, chain), side in zip(usable[:2], ("near", "next"), strict=True):
        t = (expiry - now) / SECONDS_PER_YEAR
        call_bid, call_ask = standing_quotes(book, chain.call_rows)
        put_bid, put_ask = standing_quotes(book, chain.put_rows)
        try:
            result = greeks.expiry_variance(chain.strikes, call_bid, call_ask, put_bid, put_ask, t, r,
                                            forward=_future_forward(book, chain, now, fresh_s))
        except ValueError:
            return "no_quotes"  # no strike quoted on both sides (no forward), or none at or below it
        if min(result.puts_used, result.calls_used) < min_strikes:
            return "few_strikes"
        if not result.variance > 0:
            return "negative_variance"
        results.append((t, result))
        row[f"{side}_expiry"] = expiry_label(expiry)
        row[f"{side}_variance"], row[f"forward_{side}"] = result.variance, result.forward
        row[f"strikes_used_{side}"] = result.strikes_used
    (t1, near), (t2, nxt) = results
    try:
        row["vix"] = greeks.vol_index(t1, near.variance, t2, nxt.variance, target_days)
    except ValueError:
        return "negative_variance"
    return row


def vol_index_rows(underlying: str, closed_minutes: np.ndarray, book: PriceBook,
                   expiries: Sequence[tuple[int, Chain]], r: float, fresh_s: float, roll_days: float,
                   intervals_s: Sequence[int], last_recv_ts: int, min_strikes: int = 3,
                   skipped: dict[str, int] | None = None) -> np.ndarray:
    """``VOL_INDEX_DTYPE`` rows of every interval closed by the 1-minute buckets ``closed_minutes`` (epoch s);
    the minutes without a row are counted by reason into ``skipped``."""
    rows = []
    for minute in sorted(set(int(m) for m in closed_minutes)):
        now = minute + MINUTE_S
        value = vol_index_row(book, expiries, now, r, fresh_s, roll_days, min_strikes=min_strikes)
        if isinstance(value, str):
            if skipped is not None:
                skipped[value] = skipped.get(value, 0) + 1
            continue
        for interval in intervals_s:
            if now % interval == 0:
                row = value.copy()
                row["underlying"], row["interval_s"], row["bucket"] = underlying.encode(), interval, now - interval
                row["last_recv_ts"] = last_recv_ts
                rows.append(row)
    return np.array(rows, VOL_INDEX_DTYPE) if rows else np.empty(0, VOL_INDEX_DTYPE)
