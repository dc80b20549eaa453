"""The price book: per instrument, the last trade and the best quote, each with its exchange time.

Pure (numpy, no I/O, no wall clock): times are the ticks' own exchange times,
epoch seconds. What docs/design.md's freshness rules read ("Fresh": a quote or trade
no older than a configured age in exchange time):

- ``last_price`` (rupees) and ``trade_ts``: the instrument's last trade. A tick
  carrying Kite's last trade time (full mode) sets ``trade_ts`` to it; a tick
  without one (ltp/quote mode) sets it to the tick's exchange time when its
  cumulative volume rose (a trade happened since the previous tick), else
  leaves it. 0 = no trade known yet (an option that only carries yesterday's
  last price at the open): never fresh.
- ``bid``/``ask`` (rupees, NaN = that side empty) and ``quote_ts``: the best
  level of the last full-mode tick (the only mode with depth); other modes
  leave the quote as it was. 0 = never quoted.

Rows are positions in an ``InstrumentIndex``; ticks are applied in receive
order, so the book ends at each instrument's newest state.
"""

from __future__ import annotations

import numpy as np

from pipeline.records.instruments import positions_in
from pipeline.records.ticks import MODE_FULL

_FIELDS = ("last_price", "trade_ts", "volume", "bid", "ask", "quote_ts")


class PriceBook:
    """Last trade and best quote of every instrument of an index (see the module docstring)."""

    def __init__(self, n: int) -> None:
        self.last_price = np.full(n, np.nan)
        self.trade_ts = np.zeros(n, np.int64)
        self.volume = np.full(n, -1, np.int64)  # cumulative day volume of the last tick; -1 = none yet
        self.bid = np.full(n, np.nan)
        self.ask = np.full(n, np.nan)
        self.quote_ts = np.zeros(n, np.int64)

    def __len__(self) -> int:
        return len(self.last_price)

    def update(self, pos: np.ndarray, ticks: np.ndarray) -> None:
        """Apply ``ticks`` (TICK_DTYPE, receive order) at book rows ``pos`` (-1 = not in the index)."""
        known = pos >= 0
        if not known.all():
            pos, ticks = pos[known], ticks[known]
        if not len(pos):
            return
        prev_volume = self._previous_volume(pos, ticks["volume"])
        traded = np.where(ticks["last_trade_ts"] > 0, ticks["last_trade_ts"],
                          np.where((prev_volume >= 0) & (ticks["volume"] > prev_volume), ticks["exchange_ts"], 0))
        priced = ticks["last_price"] > 0
        self.last_price[pos[priced]] = ticks["last_price"][priced]
        has_trade = traded > 0
        # a later tick of the same instrument without a trade must not undo an earlier one's: max per row
        np.maximum.at(self.trade_ts, pos[has_trade], traded[has_trade])
        self.volume[pos] = ticks["volume"]
        full = ticks["mode"] == MODE_FULL
        self.bid[pos[full]] = ticks["bid"][full]
        self.ask[pos[full]] = ticks["ask"][full]
        self.quote_ts[pos[full]] = ticks["exchange_ts"][full]

    def _previous_volume(self, pos: np.ndarray, volume: np.ndarray) -> np.ndarray:
        """Per tick, the cumulative volume of its instrument's previous tick (this batch, else the book)."""
        order = np.argsort(pos, kind="stable")
        sp = pos[order]
        prev_sorted = self.volume[sp].copy()
        same = np.zeros(len(sp), bool)
        same[1:] = sp[1:] == sp[:-1]
        prev_sorted[same] = volume[order][np.flatnonzero(same) - 1]
        prev = np.empty_like(prev_sorted)
        prev[order] = prev_sorted
        return prev

    def mids(self, rows: np.ndarray, now_ts: int | np.ndarray, fresh_s: float, max_spread: float) -> np.ndarray:
        """Mid of best bid and ask at ``rows`` where both are quoted, the quote is no older than ``fresh_s``
        at exchange time ``now_ts`` and the spread is at most ``max_spread`` of the mid; NaN elsewhere."""
        bid, ask = self.bid[rows], self.ask[rows]
        mid = (bid + ask) / 2
        with np.errstate(invalid="ignore"):
            ok = self.fresh_two_sided(rows, now_ts, fresh_s) & (ask - bid <= max_spread * mid)
        return np.where(ok, mid, np.nan)

    def fresh_quote(self, rows: np.ndarray, now_ts: int | np.ndarray, fresh_s: float) -> np.ndarray:
        """True where ``rows`` were quoted (whatever the quote) no longer than ``fresh_s`` before exchange time
        ``now_ts``."""
        return (self.quote_ts[rows] > 0) & (now_ts - self.quote_ts[rows] <= fresh_s)

    def fresh_two_sided(self, rows: np.ndarray, now_ts: int | np.ndarray, fresh_s: float) -> np.ndarray:
        """True where ``rows`` have a bid and an ask, not crossed, quoted no longer than ``fresh_s`` before
        exchange time ``now_ts``."""
        bid, ask = self.bid[rows], self.ask[rows]
        with np.errstate(invalid="ignore"):
            ok = (bid > 0) & (ask >= bid)
        return ok & self.fresh_quote(rows, now_ts, fresh_s)

    def fresh_trade(self, rows: np.ndarray, now_ts: int | np.ndarray, fresh_s: float) -> np.ndarray:
        """True where the instrument traded no longer than ``fresh_s`` before exchange time ``now_ts``."""
        return (self.trade_ts[rows] > 0) & (now_ts - self.trade_ts[rows] <= fresh_s) & (self.last_price[rows] > 0)

    def copy(self) -> PriceBook:
        """An independent copy (a batch is priced on a copy, kept only when the whole batch succeeds)."""
        out = PriceBook(0)
        for name in _FIELDS:
            setattr(out, name, getattr(self, name).copy())
        return out

    def to_state(self, tokens: np.ndarray) -> dict[str, np.ndarray]:
        """Explicit state (``pipeline.core.state``): every column and the instrument token of each row (views:
        encode them before the book changes)."""
        return {"tokens": np.asarray(tokens, np.uint32), **{name: getattr(self, name) for name in _FIELDS}}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], index_tokens: np.ndarray) -> PriceBook:
        """A book over ``index_tokens`` (sorted) with the entries of :meth:`to_state`'s tokens that are among
        them (the others left the index; new instruments start empty)."""
        book = cls(len(index_tokens))
        pos = positions_in(np.asarray(index_tokens), np.asarray(state["tokens"]))
        keep = pos >= 0
        for name in _FIELDS:
            column = getattr(book, name)
            column[pos[keep]] = np.asarray(state[name]).astype(column.dtype)[keep]
        return book

    def rebased(self, old_rows: np.ndarray) -> PriceBook:
        """A book for another index: row i takes this book's row ``old_rows[i]`` (-1 = empty)."""
        out = PriceBook(len(old_rows))
        have = old_rows >= 0
        for name in _FIELDS:
            getattr(out, name)[have] = getattr(self, name)[old_rows[have]]
        return out
