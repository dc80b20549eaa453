"""Option pricing of tick batches: choose each expiry's forward, then IV and Greeks (pure, no I/O).

Forward F of an option's expiry (DESIGN.md, "Pricing model"), in order:

1. the same-expiry future's last price, when that future is subscribed and
   has traded;
2. otherwise put-call parity at the strike nearest the money (nearest to
   spot * exp(r t)) among strikes with both sides quoted:
   ``F = K + (C - P) * exp(r t)``;
3. otherwise spot * exp(r t) from the index's last value.

"Last price" means the latest price seen so far for that instrument (the
:class:`OptionPricer` keeps a price book across batches), as of the tick's
own batch. Time to expiry is calendar time to 15:30 IST on the expiry date, in
years of 365 days; an option at or past that moment gets NaN IV and Greeks.
"""

from __future__ import annotations

import numpy as np

import greeks
from pipeline.core.checkpoint import BookEntries
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.kinds import InstrumentKind
from pipeline.records.ticks import priced_ticks


class OptionPricer:
    """Prices option ticks against a price book of every instrument in ``index``."""

    def __init__(self, index: InstrumentIndex, r: float) -> None:
        self.index = index
        self.r = r
        self.book = np.full(len(index), np.nan)

    def rebase(self, index: InstrumentIndex) -> None:
        """Switch to a refreshed index, keeping the last prices of tokens present in both."""
        book = np.full(len(index), np.nan)
        old = self.index.positions(index.tokens)
        book[old >= 0] = self.book[old[old >= 0]]
        self.index, self.book = index, book

    def book_entries(self, underlying: str) -> BookEntries:
        """The book's last prices of the underlying's instruments (for a checkpoint)."""
        own = self.index.underlying == underlying
        return BookEntries(self.index.tokens[own].copy(), self.book[own].copy())

    def restore_book(self, entries: BookEntries) -> None:
        """Put checkpointed prices back (tokens no longer in the index are ignored)."""
        pos = self.index.positions(entries.tokens)
        self.book[pos[pos >= 0]] = entries.prices[pos >= 0]

    def price(self, ticks: np.ndarray) -> np.ndarray:
        """``ticks`` (TICK_DTYPE, receive order) -> PRICED_TICK_DTYPE with forward, IV and Greeks for options."""
        out = priced_ticks(ticks)
        idx = self.index
        pos = idx.positions(ticks["instrument_token"])
        known = pos >= 0
        valid_price = known & (ticks["last_price"] > 0)
        # last write wins: ticks are in receive order, so the book ends at each token's newest price
        self.book[pos[valid_price]] = ticks["last_price"][valid_price]

        opt = known & np.isin(idx.kind[np.where(known, pos, 0)], (InstrumentKind.CALL, InstrumentKind.PUT))
        if not opt.any():
            return out
        rows = np.flatnonzero(opt)
        p = pos[rows]
        t = greeks.years_to_expiry(ticks["exchange_ts"][rows], idx.expiry_ts[p])
        forward = np.full(len(rows), np.nan)
        for key in set(zip(idx.underlying[p], idx.expiry_ts[p], strict=True)):
            sel = (idx.underlying[p] == key[0]) & (idx.expiry_ts[p] == key[1])
            forward[sel] = self._forward(key[0], int(key[1]), t[sel])
        strike = idx.strike[p]
        is_call = idx.kind[p] == InstrumentKind.CALL
        price = ticks["last_price"][rows]
        iv = greeks.implied_vol(price, forward, strike, t, self.r, is_call)
        g = greeks.black76_greeks(forward, strike, t, self.r, iv, is_call)
        out["forward"][rows] = forward
        out["iv"][rows] = iv
        for name in ("delta", "gamma", "theta", "vega", "rho"):
            out[name][rows] = getattr(g, name)
        return out

    def _forward(self, underlying: str, expiry_ts: int, t: np.ndarray) -> np.ndarray:
        """Gather the expiry's future, option and spot prices from the book; the rule is greeks'."""
        idx, book = self.index, self.book
        same = idx.underlying == underlying
        known = ~np.isnan(book)
        fut = np.flatnonzero(same & (idx.kind == InstrumentKind.FUT) & (idx.expiry_ts == expiry_ts) & known)
        spot_rows = np.flatnonzero(same & (idx.kind == InstrumentKind.INDEX) & known)
        chain = same & (idx.expiry_ts == expiry_ts)
        calls = np.flatnonzero(chain & (idx.kind == InstrumentKind.CALL) & known)
        puts = np.flatnonzero(chain & (idx.kind == InstrumentKind.PUT) & known)
        strikes = np.intersect1d(idx.strike[calls], idx.strike[puts])
        return greeks.forward_for_expiry(
            t, self.r,
            future_price=book[fut[0]] if len(fut) else np.nan,
            strikes=strikes,
            call_prices=self._prices_at(calls, strikes),
            put_prices=self._prices_at(puts, strikes),
            spot=book[spot_rows[0]] if len(spot_rows) else np.nan,
        )

    def _prices_at(self, rows: np.ndarray, strikes: np.ndarray) -> np.ndarray:
        """Book prices of ``rows`` (one per strike) ordered like ``strikes``."""
        by_strike = dict(zip(self.index.strike[rows].tolist(), self.book[rows].tolist(), strict=True))
        return np.array([by_strike[k] for k in strikes.tolist()], dtype=np.float64)
