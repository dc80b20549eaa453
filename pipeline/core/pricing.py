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

from dataclasses import dataclass

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
        self.chains = ExpiryChains(index)

    def rebase(self, index: InstrumentIndex) -> None:
        """Switch to a refreshed index, keeping the last prices of tokens present in both."""
        book = np.full(len(index), np.nan)
        old = self.index.positions(index.tokens)
        book[old >= 0] = self.book[old[old >= 0]]
        self.index, self.book, self.chains = index, book, ExpiryChains(index)

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
        chain_of = self.chains.chain_of[p]
        for chain in np.unique(chain_of).tolist():
            sel = chain_of == chain
            forward[sel] = self._forward(self.chains.chains[chain], t[sel])
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

    def _forward(self, chain: Chain, t: np.ndarray) -> np.ndarray:
        """Gather the expiry's future, option and spot prices from the book; the rule is greeks'."""
        book = self.book
        futures = book[chain.future_rows]
        spots = book[chain.spot_rows]
        calls, puts = book[chain.call_rows], book[chain.put_rows]
        both = ~np.isnan(calls) & ~np.isnan(puts)
        known_future = futures[~np.isnan(futures)]
        known_spot = spots[~np.isnan(spots)]
        return greeks.forward_for_expiry(
            t, self.r,
            future_price=known_future[0] if len(known_future) else np.nan,
            strikes=chain.strikes[both], call_prices=calls[both], put_prices=puts[both],
            spot=known_spot[0] if len(known_spot) else np.nan,
        )


@dataclass(frozen=True)
class Chain:
    """Book rows of one (underlying, expiry): its futures, the underlying's index, and the strikes listed with
    both a call and a put (ascending) with the rows of each side aligned to them."""

    future_rows: np.ndarray
    spot_rows: np.ndarray
    strikes: np.ndarray
    call_rows: np.ndarray
    put_rows: np.ndarray


class ExpiryChains:
    """Every option's chain in an index, laid out once per index so that a batch's forwards cost
    O(chain), not O(index): ``chain_of[row]`` is the position in ``chains`` of an option row's chain
    (-1 for other rows)."""

    def __init__(self, index: InstrumentIndex) -> None:
        self.chain_of = np.full(len(index), -1, dtype=np.int64)
        self.chains: list[Chain] = []
        kind, underlying, expiry_ts = index.kind, index.underlying, index.expiry_ts
        is_option = np.isin(kind, (InstrumentKind.CALL, InstrumentKind.PUT))
        if not is_option.any():
            return
        keys = np.array([f"{u}\x00{e}" for u, e in zip(underlying.tolist(), expiry_ts.tolist(), strict=True)],
                        dtype=object)
        for key in sorted(set(keys[is_option].tolist())):
            name, expiry = key.split("\x00")
            same = underlying == name
            rows = np.flatnonzero(is_option & (keys == key))
            self.chain_of[rows] = len(self.chains)
            self.chains.append(_chain(index, rows, np.flatnonzero(same & (kind == InstrumentKind.FUT)
                                                                  & (expiry_ts == int(expiry))),
                                      np.flatnonzero(same & (kind == InstrumentKind.INDEX))))


def _chain(index: InstrumentIndex, rows: np.ndarray, future_rows: np.ndarray, spot_rows: np.ndarray) -> Chain:
    calls = rows[index.kind[rows] == InstrumentKind.CALL]
    puts = rows[index.kind[rows] == InstrumentKind.PUT]
    call_at = dict(zip(index.strike[calls].tolist(), calls.tolist(), strict=True))
    put_at = dict(zip(index.strike[puts].tolist(), puts.tolist(), strict=True))
    strikes = np.array(sorted(set(call_at) & set(put_at)), dtype=np.float64)
    return Chain(future_rows, spot_rows, strikes,
                 np.array([call_at[k] for k in strikes.tolist()], dtype=np.int64),
                 np.array([put_at[k] for k in strikes.tolist()], dtype=np.int64))
