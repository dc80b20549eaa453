"""Put-call-parity forward."""

from __future__ import annotations

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


def forward_for_expiry(
    t: ArrayLike,
    r: float,
    *,
    future_price: float = np.nan,
    strikes: ArrayLike = (),
    call_prices: ArrayLike = (),
    put_prices: ArrayLike = (),
    spot: float = np.nan,
) -> np.ndarray:
    """The forward of one expiry at times to expiry ``t`` (years), by DESIGN.md's rule, in order:

    1. ``future_price``: the same-expiry future's last price, when known (finite, > 0);
    2. put-call parity (:func:`forward_from_parity`) at the strike nearest the money among
       ``strikes`` whose ``call_prices`` and ``put_prices`` are both known (finite, > 0); the
       money is ``spot * exp(r t)`` (mean t) when the spot is known, else the middle such strike;
    3. ``spot * exp(r t)``;
    4. NaN: nothing known (the option's IV is then NaN, never made up).

    Prices in rupees as quoted (discounted), ``r`` continuously compounded per year.
    Returns an array shaped like ``t``.
    """
    t = np.maximum(np.asarray(t, dtype=np.float64), 0.0)
    if np.isfinite(future_price) and future_price > 0:
        return np.full(t.shape, float(future_price))
    k = np.asarray(strikes, dtype=np.float64)
    c = np.asarray(call_prices, dtype=np.float64)
    p = np.asarray(put_prices, dtype=np.float64)
    quoted = np.isfinite(c) & np.isfinite(p) & (c > 0) & (p > 0) if k.size else np.zeros(0, bool)
    carry = np.exp(r * t)
    if quoted.any():
        kq, cq, pq = k[quoted], c[quoted], p[quoted]
        anchor = spot * float(carry.mean()) if np.isfinite(spot) and spot > 0 else np.sort(kq)[len(kq) // 2]
        i = int(np.argmin(np.abs(kq - anchor)))
        return np.asarray(forward_from_parity(cq[i], pq[i], kq[i], t, r), dtype=np.float64)
    if np.isfinite(spot) and spot > 0:
        return spot * carry
    return np.full(t.shape, np.nan)
