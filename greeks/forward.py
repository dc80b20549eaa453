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
