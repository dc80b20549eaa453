"""Chain quality at a bar close: how far an expiry's quotes can be trusted (pure: numpy, no I/O, no clock).

A dashboard greys out a chain whose quotes contradict themselves; these counts say how many do. They
are taken from the price book at the close of every 1-minute bucket ``b`` (exchange time ``now = b + 60``),
over the expiry's strikes listed with both a call and a put, like the volatility index
(``pipeline.core.vol_index_live``), and stored on the chain rows (``CHAIN_BAR_DTYPE``):

- ``crossed_quotes``: options (calls and puts) whose quote is fresh at ``now`` (quoted no more than
  ``fresh_s`` before it) with a bid and an ask, where bid >= ask (crossed, or locked when equal).
- ``strikes_quoted``: strikes whose call and put both have a fresh, two-sided, uncrossed quote
  (``PriceBook.fresh_two_sided``): the denominator of the two counts below.
- ``parity_violations``: of those strikes, the ones where put-call parity fails beyond the quoted spread:
  the expiry's forward ``F`` (the pricer's, at ``now``: future, parity or carry) lies outside the synthetic
  forward's bid/ask band ``[K + e^{rT}(C_bid - P_ask), K + e^{rT}(C_ask - P_bid)]``. With no forward
  (NaN) nothing is counted.
- ``butterfly_violations``: call mids that break convexity in strike: for each three consecutive
  quoted strikes ``K1 < K2 < K3``, ``C(K2) > ((K3 - K2) C(K1) + (K2 - K1) C(K3)) / (K3 - K1)``
  (by more than 1e-9 rupees, float noise).

5- and 15-minute chain rows carry the counts of the minute that closes them (the same instant), as the
volatility index does. Units: prices and strikes rupees, ``t`` years, ``r`` a continuous annual rate.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from pipeline.core.price_book import PriceBook
from pipeline.records.rollups import MISSING_INT

CONVEXITY_TOLERANCE = 1e-9  # rupees: a butterfly priced below this is float noise, not a violation


@dataclass(frozen=True)
class ChainQuality:
    """The counts of one expiry at one close (module docstring)."""

    parity_violations: int
    crossed_quotes: int
    butterfly_violations: int
    strikes_quoted: int


QUALITY_FIELDS = tuple(f.name for f in fields(ChainQuality))  # the chain row's columns of the same names


def crossed_quotes(book: PriceBook, rows: np.ndarray, now: int, fresh_s: float) -> int:
    """Options at book ``rows`` quoted fresh at ``now`` with a bid and an ask where bid >= ask."""
    bid, ask = book.bid[rows], book.ask[rows]
    with np.errstate(invalid="ignore"):
        bad = (bid > 0) & (ask > 0) & (bid >= ask)
    return int((bad & book.fresh_quote(rows, now, fresh_s)).sum())


def parity_violations(strikes: np.ndarray, call_bid: np.ndarray, call_ask: np.ndarray, put_bid: np.ndarray,
                      put_ask: np.ndarray, forward: float, t: float, r: float) -> int:
    """Strikes whose synthetic forward band (from the quotes) excludes ``forward``; arrays aligned, quoted
    strikes only."""
    if not np.isfinite(forward) or not len(strikes):
        return 0
    growth = np.exp(r * t)
    low = strikes + growth * (call_bid - put_ask)
    high = strikes + growth * (call_ask - put_bid)
    return int(((forward < low) | (forward > high)).sum())


def butterfly_violations(strikes: np.ndarray, call_mid: np.ndarray) -> int:
    """Consecutive strike triples (ascending, quoted strikes only) whose middle call mid lies above the
    chord of its neighbours."""
    if len(strikes) < 3:
        return 0
    k1, k2, k3 = strikes[:-2], strikes[1:-1], strikes[2:]
    c1, c2, c3 = call_mid[:-2], call_mid[1:-1], call_mid[2:]
    chord = ((k3 - k2) * c1 + (k2 - k1) * c3) / (k3 - k1)
    return int((c2 - chord > CONVEXITY_TOLERANCE).sum())


def chain_quality(book: PriceBook, strikes: np.ndarray, call_rows: np.ndarray, put_rows: np.ndarray, now: int,
                  fresh_s: float, forward: float, t: float, r: float) -> ChainQuality:
    """The counts of one expiry (``strikes`` ascending, book rows of its calls and puts aligned) at ``now``."""
    both = book.fresh_two_sided(call_rows, now, fresh_s) & book.fresh_two_sided(put_rows, now, fresh_s)
    k, calls, puts = strikes[both], call_rows[both], put_rows[both]
    call_bid, call_ask = book.bid[calls], book.ask[calls]
    return ChainQuality(
        parity_violations=parity_violations(k, call_bid, call_ask, book.bid[puts], book.ask[puts], forward, t, r),
        crossed_quotes=crossed_quotes(book, call_rows, now, fresh_s) + crossed_quotes(book, put_rows, now, fresh_s),
        butterfly_violations=butterfly_violations(k, (call_bid + call_ask) / 2),
        strikes_quoted=int(both.sum()),
    )


class QualityLedger:
    """The counts of an underlying's expiries at each 1-minute close, kept for as long as a late correction can
    still recompute a chain row of that minute (``retain_s``), so a recomputed row carries the counts of its
    close, not of the moment it was recomputed. Keyed by (expiry close epoch s, minute bucket epoch s): the
    rollup that fills a row knows its expiry by the same timestamp, so no label has to match."""

    def __init__(self, retain_s: float, minute_s: int = 60) -> None:
        self.retain_s = retain_s
        self.minute_s = minute_s
        self._counts: dict[tuple[int, int], ChainQuality] = {}

    def __len__(self) -> int:
        return len(self._counts)

    def record(self, expiry_ts: int, minute: int, quality: ChainQuality) -> None:
        self._counts[(int(expiry_ts), int(minute))] = quality
        newest = max(m for _, m in self._counts)
        for key in [k for k in self._counts if k[1] < newest - self.retain_s]:
            del self._counts[key]

    def fill(self, chain_rows: np.ndarray, expiry_ts: int) -> None:
        """Set the quality columns of ``chain_rows`` (``CHAIN_BAR_DTYPE``, of the expiry closing at
        ``expiry_ts``; in place) from the counts of the minute that closes each row; ``MISSING_INT`` (NULL)
        where that close was not seen."""
        for i, (interval, bucket) in enumerate(zip(chain_rows["interval_s"].tolist(), chain_rows["bucket"].tolist(),
                                                   strict=True)):
            quality = self._counts.get((int(expiry_ts), bucket + interval - self.minute_s))
            for name in QUALITY_FIELDS:
                chain_rows[name][i] = MISSING_INT if quality is None else getattr(quality, name)

    def to_state(self) -> dict[str, np.ndarray]:
        """Explicit state (``pipeline.core.state``): one row per (expiry, minute) with its counts."""
        keys = sorted(self._counts)
        state = {"expiry_ts": np.array([k[0] for k in keys], np.int64), "minute": np.array([k[1] for k in keys], np.int64)}
        for name in QUALITY_FIELDS:
            state[name] = np.array([getattr(self._counts[k], name) for k in keys], np.int64)
        return state

    def restore(self, state: dict[str, np.ndarray]) -> None:
        columns = [state[name].tolist() for name in QUALITY_FIELDS]
        self._counts = {(int(e), int(m)): ChainQuality(**dict(zip(QUALITY_FIELDS, values, strict=True)))
                        for e, m, *values in zip(state["expiry_ts"].tolist(), state["minute"].tolist(), *columns,
                                                 strict=True)}


__all__ = ["CONVEXITY_TOLERANCE", "QUALITY_FIELDS", "ChainQuality", "QualityLedger", "butterfly_violations", "chain_quality",
           "crossed_quotes", "parity_violations"]
