"""strikeflow Greeks engine: Black-76 prices, implied volatility and Greeks.

Pure numeric code (no I/O). All functions take array-likes and broadcast them
like numpy; ``is_call`` is a boolean array, ``r`` a scalar or array.

Units and conventions (docs/design.md "Definitions")
-----------------------------------------------
* Time to expiry ``t``: calendar years of 365 days from the exchange timestamp
  to 15:30 IST on the expiry date (:func:`years_to_expiry`, :func:`expiry_close_ts`).
* Model: Black-76 on the forward F of the expiry, discounted by ``exp(-r t)``,
  ``r`` continuously compounded decimal per year.
* ``sigma`` / implied vol: annualised decimal (0.15 = 15 %).
* delta, gamma: with respect to F. theta: per calendar day, ``-dV/dT / 365``.
  vega: per 1 vol point (``dV/dsigma * 0.01``). rho: per 1 percentage point of
  r with F held fixed (``-t V * 0.01``).
* Invalid rows give NaN, never exceptions and never made-up numbers.

Implementation: per-row kernels compiled with numba (``cache=True``: the
first call in a fresh environment compiles for a few seconds and writes the
cache next to the package; later processes load it). Inputs are converted to
float64 (``is_call`` to bool); outputs have the numpy broadcast shape of the
inputs (0-d arrays for all-scalar input).
"""

from greeks.black76 import Greeks, black76_greeks, black76_price
from greeks.expiry import IST, SECONDS_PER_YEAR, expiry_close_ts, years_to_expiry
from greeks.forward import ExpiryForward, forward_for_expiry, forward_from_parity
from greeks.implied_vol import implied_vol
from greeks.vol_index import ExpiryVariance, expiry_variance, vol_index

__all__ = [
    "IST",
    "SECONDS_PER_YEAR",
    "ExpiryForward",
    "ExpiryVariance",
    "Greeks",
    "black76_greeks",
    "black76_price",
    "expiry_close_ts",
    "expiry_variance",
    "forward_for_expiry",
    "forward_from_parity",
    "implied_vol",
    "vol_index",
    "years_to_expiry",
]
