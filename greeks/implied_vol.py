"""Black-76 implied volatility (vectorised, compiled per-row solver).

Method: the discounted price is undiscounted (``/ exp(-r t)``), reduced to the
time value of an out-of-the-money option via put-call parity and normalised
by ``sqrt(F K)`` (Jäckel's normalised Black function with ``x = ln(F/K)``,
``s = sigma sqrt(t)``). The total standard deviation ``s`` is found by
third-order Householder iterations on ``ln b`` (normalised price up to half
its upper bound; well conditioned for tiny prices) or on ``ln(b_max - b)``
(near the upper bound), from closed-form initial guesses (Corrado-Miller near
the money, the small-s asymptotic expansion far from it, an inverse-normal
guess near the bound); typically 2-3 iterations. A bracket is kept at every
step; steps that leave it become Newton or bisection steps. Convergence is
explicit (Householder step <= 1e-5 s, after which the cubic step leaves an
error far below 1e-12 s, or Newton step <= 1e-10 s); rows that have not
converged after 16 iterations are finished by bisection on the bracket down
to adjacent doubles, so every valid row converges: there is no silent
non-convergence and no iteration cap that returns an unconverged number.

Accuracy: the result reprices the input to ~1e-11 relative or better
wherever the price is at least one tick (0.05) (tests: <= 1e-9), and agrees
with Let's Be Rational (vollib) to < 1e-8 absolute in volatility where vega
is not negligible (see tests/greeks for the stated rule).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from greeks import _kernels
from greeks._arrays import broadcast_flat, size_of


def implied_vol(
    price: ArrayLike,
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    r: ArrayLike,
    is_call: ArrayLike,
) -> np.ndarray:
    """Annualised Black-76 volatility (decimal) that reprices the discounted ``price``.

    ``t`` in years (365-day), ``r`` continuously compounded (decimal).
    NaN (never an exception, never a made-up number) for rows where no
    positive volatility reprices the price:

    * price <= discounted intrinsic value (at intrinsic the only "solution" is
      sigma = 0, which is not reported),
    * price >= upper bound: discounted F for calls, discounted K for puts,
    * t <= 0 (at/after expiry), price/F/K <= 0, any non-finite input
      (NaN forward included).
    """
    shape, (p, f, k, tt, rr), c = broadcast_flat((price, forward, strike, t, r), is_call)
    out = np.empty(size_of(shape), dtype=np.float64)
    if out.shape[0]:
        _kernels.implied_vol_kernel(p, f, k, tt, rr, c, out)
    return out.reshape(shape)
