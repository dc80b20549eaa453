"""Plain scalar references and vollib adapters for the Greeks engine tests.

vollib conventions (read from vollib/black/greeks/analytical.py, vollib 1.0.x):
* ``black(flag, F, K, t, r, sigma)``: discounted Black-76 price (same as ours).
* ``implied_volatility(price, F, K, r, t, flag)``: note argument order r, t.
* delta = exp(-rt) N(d1) (call), -exp(-rt) N(-d1) (put): w.r.t. F -> same as ours.
* gamma = exp(-rt) phi(d1) / (F sigma sqrt t): w.r.t. F -> same.
* theta = -(dV/dT) / 365 with F fixed (per calendar day, decay negative) -> same.
* vega = dV/dsigma * 0.01 (per vol point) -> same.
* rho = -t V * 0.01 (per percentage point, F fixed) -> same.
So the mapping is the identity; the tests still state it explicitly.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.special import ndtr
from vollib.black import black as vollib_black
from vollib.black.greeks import analytical as vollib_greeks
from vollib.black.implied_volatility import implied_volatility as vollib_iv

# ours -> (vollib function, factor applied to vollib's value)
VOLLIB_GREEK_MAP = {
    "delta": (vollib_greeks.delta, 1.0),
    "gamma": (vollib_greeks.gamma, 1.0),
    "theta": (vollib_greeks.theta, 1.0),  # both per calendar day
    "vega": (vollib_greeks.vega, 1.0),  # both per 0.01 vol
    "rho": (vollib_greeks.rho, 1.0),  # both per 0.01 rate
}


def flag(is_call: bool) -> str:
    return "c" if is_call else "p"


def vollib_price(f, k, t, r, sigma, is_call) -> float:
    return float(vollib_black(flag(is_call), f, k, t, r, sigma))


def vollib_implied_vol(price, f, k, t, r, is_call) -> float:
    """vollib IV, NaN where vollib raises (below intrinsic / above maximum)."""
    try:
        return float(vollib_iv(price, f, k, r, t, flag(is_call)))
    except Exception:  # noqa: BLE001 - vollib's own exception types
        return math.nan


def vollib_greek(name, f, k, t, r, sigma, is_call) -> float:
    fn, factor = VOLLIB_GREEK_MAP[name]
    return float(fn(flag(is_call), f, k, t, r, sigma)) * factor


def plain_price(f, k, t, r, sigma, is_call) -> float:
    """Textbook scalar Black-76 (no normalisation tricks)."""
    s = sigma * math.sqrt(t)
    d1 = math.log(f / k) / s + 0.5 * s
    d2 = d1 - s
    df = math.exp(-r * t)
    if is_call:
        return df * (f * ndtr(d1) - k * ndtr(d2))
    return df * (k * ndtr(-d2) - f * ndtr(-d1))


def brentq_implied_vol(price, f, k, t, r, is_call) -> float:
    """Per-row scalar reference: brentq on the textbook price over sigma in [1e-4, 20]."""
    def g(sig):
        return plain_price(f, k, t, r, sig, is_call) - price

    lo, hi = 1e-4, 20.0
    if g(lo) > 0 or g(hi) < 0:
        return math.nan
    return brentq(g, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500)


def raw_vega(f, k, t, r, sigma):
    """dV/dsigma (not scaled), numpy."""
    s = sigma * np.sqrt(t)
    d1 = np.log(f / k) / s + 0.5 * s
    return np.exp(-r * t) * f * np.exp(-0.5 * d1 * d1) / math.sqrt(2 * math.pi) * np.sqrt(t)


def comparable(price, f, k, t, r, sigma, is_call):
    """Stated exclusion rule for the 1e-8 comparisons against vollib.

    A row is compared when
      * price >= 0.05 (one NSE tick), and
      * the time value (price minus discounted intrinsic) >= 0.05, and
      * raw vega dV/dsigma >= 1e-6 * max(F, K).
    The last condition bounds the vol error caused by a few ulps of rounding
    in price * exp(rt) and in the intrinsic value (~1e-15 * max(F, K)) to
    below 1e-9, so the two implementations can be held to 1e-8.
    """
    f, k, t, sigma, price = map(np.asarray, (f, k, t, sigma, price))
    intrinsic = np.where(is_call, np.maximum(f - k, 0.0), np.maximum(k - f, 0.0)) * np.exp(-r * t)
    return (
        (price >= 0.05)
        & (price - intrinsic >= 0.05)
        & (raw_vega(f, k, t, r, sigma) >= 1e-6 * np.maximum(f, k))
    )


# The domain that matters for index options (issue 4): NIFTY/BANKNIFTY-sized and small forwards,
# |ln(F/K)| <= 1, 30 seconds to 2 years, volatility 1 % to 300 %.
OPTION_INPUTS = dict(
    f=st.one_of(st.floats(20000, 50000), st.floats(1.0, 500.0)),
    x=st.floats(-1.0, 1.0),
    t_s=st.floats(30.0, 2 * 365 * 86400.0),
    vol=st.floats(0.01, 3.0),
    r=st.floats(-0.02, 0.15),
    call=st.booleans(),
)
