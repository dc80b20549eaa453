"""Put-call-parity forward."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike


def forward_from_parity(
    call_price: ArrayLike,
    put_price: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    r: ArrayLike,
) -> np.ndarray:
    """Forward implied by put-call parity: ``F = K + (C - P) * exp(r t)``.

    Prices discounted (as quoted), ``t`` in years, ``r`` continuously
    compounded decimal. NaN propagates from any NaN input; no validation of
    the result (a non-positive F makes the downstream IV NaN).
    """
    c = np.asarray(call_price, dtype=np.float64)
    p = np.asarray(put_price, dtype=np.float64)
    k = np.asarray(strike, dtype=np.float64)
    tt = np.asarray(t, dtype=np.float64)
    rr = np.asarray(r, dtype=np.float64)
    return np.asarray(k + (c - p) * np.exp(rr * tt))


class ExpiryForward(NamedTuple):
    """The forward of one expiry (rupees, shaped like ``t``) and which rule gave it: ``"future"``,
    ``"parity"``, ``"carry"``, or ``""`` when nothing is known (the forward is then NaN)."""

    forward: np.ndarray
    source: str


def forward_for_expiry(
    t: ArrayLike,
    r: float,
    *,
    future_price: float = np.nan,
    strikes: ArrayLike = (),
    call_prices: ArrayLike = (),
    put_prices: ArrayLike = (),
    spot: float = np.nan,
    near: int = 5,
) -> ExpiryForward:
    """The forward of one expiry at times to expiry ``t`` (years), by docs/design.md's rule, in order:

    1. ``future_price``: the same-expiry future's price, when given (finite, > 0);
    2. put-call parity (:func:`forward_from_parity`) over the ``near`` strikes nearest the money
       among ``strikes`` whose ``call_prices`` and ``put_prices`` are both given (finite, > 0):
       the median of their forwards, so one bad pair cannot move it; the money is
       ``spot * exp(r t)`` (mean t) when the spot is known, else the middle such strike;
    3. ``spot * exp(r t)``;
    4. NaN: nothing known (the option's IV is then NaN, never made up).

    Freshness is the caller's: pass only prices it trusts (a fresh future, fresh two-sided mids),
    NaN for the rest. Prices in rupees as quoted (discounted), ``r`` continuously compounded per year.
    """
    t = np.maximum(np.asarray(t, dtype=np.float64), 0.0)
    if np.isfinite(future_price) and future_price > 0:
        return ExpiryForward(np.full(t.shape, float(future_price)), "future")
    k = np.asarray(strikes, dtype=np.float64)
    c = np.asarray(call_prices, dtype=np.float64)
    p = np.asarray(put_prices, dtype=np.float64)
    quoted = np.isfinite(c) & np.isfinite(p) & (c > 0) & (p > 0) if k.size else np.zeros(0, bool)
    carry = np.exp(r * t)
    if quoted.any():
        kq, cq, pq = k[quoted], c[quoted], p[quoted]
        anchor = spot * float(carry.mean()) if np.isfinite(spot) and spot > 0 else np.sort(kq)[len(kq) // 2]
        nearest = np.argsort(np.abs(kq - anchor), kind="stable")[:max(int(near), 1)]
        per_strike = forward_from_parity(cq[nearest, None], pq[nearest, None], kq[nearest, None], t.ravel()[None, :], r)
        return ExpiryForward(np.median(per_strike, axis=0).reshape(t.shape), "parity")
    if np.isfinite(spot) and spot > 0:
        return ExpiryForward(spot * carry, "carry")
    return ExpiryForward(np.full(t.shape, np.nan), "")
