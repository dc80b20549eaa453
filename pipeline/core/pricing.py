"""Option pricing of tick batches: choose each expiry's forward, then IV and Greeks (pure, no I/O).

Forward F of an option's expiry (docs/design.md, "Pricing model"), in order, as of the
tick's exchange time ``now`` and with "fresh" = no older than ``PricingRules.fresh_s``:

1. ``future``: the same-expiry future's last trade, when that future is subscribed
   and its last trade is fresh;
2. ``parity``: put-call parity over the ``parity_strikes`` strikes nearest the money
   whose call and put both have fresh two-sided quotes (mids within ``max_spread``):
   the median of ``K + (C_mid - P_mid) * exp(r t)``. Never a stale pair, and never
   last trades (a call that last traded 3 minutes ago says nothing of the forward now);
3. ``carry``: the index's last value * exp(r t).

Per option tick (``pipeline.records.ticks``): ``iv`` reprices ``last_price`` (the
NSE/Kite chain convention, whatever its age); ``mid_iv`` reprices the fresh mid when
there is one; ``stale`` = 1 when the option's last trade is older than ``fresh_s``
(or unknown); ``near_expiry`` = 1 in the last ``near_expiry_s`` before 15:30 IST on
expiry day; ``forward_source`` the rule's code. The book (``pipeline.core.price_book``)
is updated with the batch first, so a tick is priced with everything received up to
and including its batch. Time to expiry is calendar time to 15:30 IST on the expiry
date, in years of 365 days; an option at or past that moment gets NaN IV and Greeks.

The functions are stateless: the book is the caller's (one per underlying, owned by its engine,
``pipeline.core.engine``), everything else a :class:`PricingContext` per instrument index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import greeks
from pipeline.core.price_book import PriceBook
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.kinds import InstrumentKind
from pipeline.records.ticks import (
    FORWARD_CARRY,
    FORWARD_FUTURE,
    FORWARD_PARITY,
    priced_ticks,
)
from pipeline.runtime.settings import Settings

FORWARD_SOURCE_CODES = {"future": FORWARD_FUTURE, "parity": FORWARD_PARITY, "carry": FORWARD_CARRY, "": np.nan}


@dataclass(frozen=True)
class PricingRules:
    """The freshness rules of docs/design.md. ``fresh_s``: seconds of exchange time a trade or quote stays
    fresh; ``max_spread``: widest ask - bid, as a fraction of the mid, for a quote to count;
    ``parity_strikes``: strikes nearest the money the parity forward combines (median);
    ``near_expiry_s``: seconds before the expiry's 15:30 IST close within which IVs are flagged."""

    fresh_s: float = 60.0
    max_spread: float = 0.10
    parity_strikes: int = 5
    near_expiry_s: float = 1800.0

    @classmethod
    def from_settings(cls, settings: Settings) -> PricingRules:
        """The rules configured (``STRIKEFLOW_FRESH_S`` and the rest)."""
        return cls(fresh_s=settings.fresh_s, max_spread=settings.max_spread,
                   parity_strikes=settings.parity_strikes, near_expiry_s=settings.near_expiry_s)

    def __post_init__(self) -> None:
        if not self.fresh_s > 0:
            raise ValueError(f"fresh_s must be > 0 seconds, got {self.fresh_s!r}")
        if not 0 < self.max_spread <= 2:
            raise ValueError(f"max_spread is a fraction of the mid in (0, 2], got {self.max_spread!r}")
        if self.parity_strikes < 1:
            raise ValueError(f"parity_strikes must be at least 1, got {self.parity_strikes!r}")
        if self.near_expiry_s < 0:
            raise ValueError(f"near_expiry_s must be >= 0 seconds, got {self.near_expiry_s!r}")


@dataclass(frozen=True)
class PricingContext:
    """What pricing reads besides the price book, fixed for one instrument index: the index, its expiry
    chains (laid out once), the freshness rules and the risk-free rate (continuous, per year)."""

    index: InstrumentIndex
    chains: ExpiryChains
    rules: PricingRules
    r: float

    @classmethod
    def of(cls, index: InstrumentIndex, r: float, rules: PricingRules = PricingRules()) -> PricingContext:
        return cls(index, ExpiryChains(index), rules, r)


def price_ticks(ctx: PricingContext, book: PriceBook, ticks: np.ndarray) -> np.ndarray:
    """``ticks`` (TICK_DTYPE, receive order) -> PRICED_TICK_DTYPE with forward, IVs, Greeks and flags for
    options (NaN for every other instrument). ``book`` (rows of ``ctx.index``) is updated with the batch
    first: the only state pricing touches, and the caller's."""
    out = priced_ticks(ticks)
    idx, rules, r = ctx.index, ctx.rules, ctx.r
    pos = idx.positions(ticks["instrument_token"])
    known = pos >= 0
    book.update(pos, ticks)
    opt = known & np.isin(idx.kind[np.where(known, pos, 0)], (InstrumentKind.CALL, InstrumentKind.PUT))
    if not opt.any():
        return out
    rows = np.flatnonzero(opt)
    p = pos[rows]
    now = ticks["exchange_ts"][rows]
    t = greeks.years_to_expiry(now, idx.expiry_ts[p])
    forward, source = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
    chain_of = ctx.chains.chain_of[p]
    for chain in np.unique(chain_of).tolist():
        sel = chain_of == chain
        forward[sel], source[sel] = _forward(ctx, book, ctx.chains.chains[chain], t[sel], int(now[sel].max()))
    strike = idx.strike[p]
    is_call = idx.kind[p] == InstrumentKind.CALL
    iv = greeks.implied_vol(ticks["last_price"][rows], forward, strike, t, r, is_call)
    mid = book.mids(p, now, rules.fresh_s, rules.max_spread)
    g = greeks.black76_greeks(forward, strike, t, r, iv, is_call)
    out["forward"][rows] = forward
    out["forward_source"][rows] = source
    out["iv"][rows] = iv
    out["mid_iv"][rows] = greeks.implied_vol(mid, forward, strike, t, r, is_call)
    out["stale"][rows] = ~book.fresh_trade(p, now, rules.fresh_s)
    out["near_expiry"][rows] = (idx.expiry_ts[p] - now) <= rules.near_expiry_s
    for name in ("delta", "gamma", "theta", "vega", "rho"):
        out[name][rows] = getattr(g, name)
    out["spot_delta"][rows] = g.delta * np.exp(r * t)  # dF/dS = e^{rt} under cost of carry
    return out


def forward_at(ctx: PricingContext, book: PriceBook, chain: Chain, expiry_ts: int, now: int) -> float:
    """The forward (rupees) the chain's options are priced against at exchange time ``now`` (epoch s)."""
    t = greeks.years_to_expiry(np.array([now], np.int64), np.array([expiry_ts], np.int64))
    return float(np.asarray(_forward(ctx, book, chain, t, now)[0]).reshape(-1)[0])


def _forward(ctx: PricingContext, book: PriceBook, chain: Chain, t: np.ndarray, now: int) -> tuple[np.ndarray, float]:
    """The expiry's forward at exchange time ``now`` from the fresh prices in the book; the rule is greeks'."""
    rules = ctx.rules
    fresh_future = chain.future_rows[book.fresh_trade(chain.future_rows, now, rules.fresh_s)]
    choice = greeks.forward_for_expiry(
        t, ctx.r,
        future_price=book.last_price[fresh_future[0]] if len(fresh_future) else np.nan,
        strikes=chain.strikes,
        call_prices=book.mids(chain.call_rows, now, rules.fresh_s, rules.max_spread),
        put_prices=book.mids(chain.put_rows, now, rules.fresh_s, rules.max_spread),
        spot=first_positive(book.last_price[chain.spot_rows]),
        near=rules.parity_strikes,
    )
    return choice.forward, FORWARD_SOURCE_CODES[choice.source]


def first_positive(prices: np.ndarray) -> float:
    """The first finite price above 0 (an index's or a future's, by row order), NaN when there is none."""
    known = prices[np.isfinite(prices) & (prices > 0)]
    return float(known[0]) if len(known) else np.nan


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
