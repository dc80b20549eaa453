"""Black-76 prices and Greeks on forwards (vectorised, broadcasting).

Units and conventions
---------------------
* ``forward``, ``strike`` and prices in index points (rupees per unit);
  ``t`` in years of 365 days; ``r`` continuously compounded per year (decimal);
  ``sigma`` annualised (decimal, 0.15 = 15 %).
* Price: ``exp(-r t) * [F N(d1) - K N(d2)]`` (call), put by parity.
* delta, gamma: with respect to the forward F (call delta = exp(-r t) N(d1)).
* theta: per calendar day, ``-dV/dT / 365`` (time decay is negative),
  F held fixed: ``theta = (r V - exp(-r t) F phi(d1) sigma / (2 sqrt t)) / 365``.
* vega: per volatility point, ``dV/dsigma * 0.01``.
* rho: per percentage point of r with F held fixed, ``-t V * 0.01``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from greeks import _kernels
from greeks._arrays import broadcast_flat, size_of


class Greeks(NamedTuple):
    """Black-76 value and sensitivities, each an ndarray of the broadcast shape."""

    price: np.ndarray  #: discounted option value
    delta: np.ndarray  #: dV/dF
    gamma: np.ndarray  #: d2V/dF2
    theta: np.ndarray  #: -dV/dT per calendar day (1/365 year)
    vega: np.ndarray  #: dV/dsigma per 0.01 of volatility
    rho: np.ndarray  #: dV/dr per 0.01 of r, F fixed


def black76_price(
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    r: ArrayLike,
    sigma: ArrayLike,
    is_call: ArrayLike,
) -> np.ndarray:
    """Discounted Black-76 price ``exp(-r t) * E[payoff]`` (same units as forward).

    Rows with ``t <= 0`` (at or after expiry) return the undiscounted intrinsic
    value ``max(F - K, 0)`` / ``max(K - F, 0)``; ``sigma == 0`` with ``t > 0``
    returns the discounted intrinsic value. NaN for negative/NaN sigma (when
    ``t > 0``), non-positive or non-finite F or K, non-finite t or r.
    """
    shape, (f, k, tt, rr, sg), c = broadcast_flat((forward, strike, t, r, sigma), is_call)
    out = np.empty(size_of(shape), dtype=np.float64)
    if out.shape[0]:
        _kernels.price_kernel(f, k, tt, rr, sg, c, out)
    return out.reshape(shape)


def black76_greeks(
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    r: ArrayLike,
    sigma: ArrayLike,
    is_call: ArrayLike,
) -> Greeks:
    """Black-76 price, delta, gamma, theta (per day), vega (per vol point), rho (per % point).

    Rows where sigma is NaN or <= 0, t <= 0 (expired), or F/K are not
    positive finite numbers give NaN in every field.
    """
    shape, (f, k, tt, rr, sg), c = broadcast_flat((forward, strike, t, r, sigma), is_call)
    n = size_of(shape)
    buf = np.empty((6, n), dtype=np.float64)
    if n:
        _kernels.greeks_kernel(f, k, tt, rr, sg, c, buf)
    return Greeks(*(row.reshape(shape) for row in buf))
