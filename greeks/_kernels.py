"""Numba kernels (scalar per-row code, compiled once and cached on disk).

Everything here works on flat float64 arrays. The public wrappers in
:mod:`greeks.black76` and :mod:`greeks.implied_vol` take care of broadcasting.

Notation (Jäckel, "Let's be rational"): ``x = ln(F/K)``, ``s = sigma*sqrt(t)``,
normalised price ``b = undiscounted_price / sqrt(F*K)``.  Every option is
reduced to an out-of-the-money call on ``x <= 0`` via put-call parity and the
symmetry ``b(x, s, call) = b(-x, s, put)``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

SQRT2 = math.sqrt(2.0)
INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)
S_MAX = 80.0  # b(x, 80) == upper bound in double precision for any x <= 0
MAX_HOUSEHOLDER = 16
REL_STEP_TOL_HOUSEHOLDER = 1e-5
REL_STEP_TOL_NEWTON = 1e-10
SQRT2PI = math.sqrt(2.0 * math.pi)


@njit(cache=True, inline="always", error_model="numpy")
def _b_otm(x, s, ep, em, d):
    """Normalised undiscounted OTM call price, x <= 0, s > 0.

    ep = exp(x/2), em = exp(-x/2), d = ep - em = 2 sinh(x/2) (computed with
    sinh, not by subtraction), precomputed by the caller.
    Lower region (s*s <= -2x, both Phi arguments negative): erfc form, both
    tails accurate. Upper region: erf form, no cancellation near the money.
    Relative accuracy: a few ulps, except far from the money at tiny s where
    the two terms cancel (loss ~ |x|/s^2 ulps, < 1e-10 relative wherever the
    price is above 1e-300).
    """
    h = x / s
    tau = 0.5 * s
    if h + tau <= 0.0:
        return 0.5 * (ep * math.erfc(-(h + tau) / SQRT2) - em * math.erfc(-(h - tau) / SQRT2))
    return 0.5 * (
        d + ep * math.erf((h + tau) / SQRT2) - em * math.erf((h - tau) / SQRT2)
    )


@njit(cache=True, inline="always", error_model="numpy")
def _u_otm(x, s, ep, em):
    """Upper bound minus normalised OTM call price: exp(x/2) - b(x, s) (sum, no cancellation).

    ep = exp(x/2), em = exp(-x/2) (precomputed by the caller, as for _b_otm).
    """
    h = x / s
    tau = 0.5 * s
    return 0.5 * (
        ep * math.erfc((h + tau) / SQRT2)
        + em * math.erfc(-(h - tau) / SQRT2)
    )


@njit(cache=True, inline="always", error_model="numpy")
def _bprime(x, s):
    """d b / d s = exp(-(x^2/s^2 + s^2/4)/2) / sqrt(2 pi)."""
    h = x / s
    return INV_SQRT2PI * math.exp(-0.5 * (h * h + 0.25 * s * s))


@njit(cache=True, inline="always", error_model="numpy")
def _inv_norm_upper(p):
    """Rough z with Phi(-z) = p for 0 < p < 0.5 (A&S 26.2.23, |err| < 4.5e-4). Guess only."""
    tt = math.sqrt(-2.0 * math.log(p))
    return tt - (2.515517 + 0.802853 * tt + 0.010328 * tt * tt) / (
        1.0 + 1.432788 * tt + 0.189269 * tt * tt + 0.001308 * tt * tt * tt
    )


@njit(cache=True, error_model="numpy")
def _solve_s(beta, x):
    return _solve_s_iter(beta, x)[0]


@njit(cache=True, error_model="numpy")
def _solve_s_iter(beta, x):
    """Total implied standard deviation s for an OTM call (x <= 0, 0 < beta < exp(x/2)).

    Returns (s, iterations). Third-order Householder iterations on
      ln b(s) - ln beta                     when beta <= bmax/2 (low and middle prices;
                                            well conditioned for tiny prices),
      ln(bmax - b(s)) - ln(bmax - beta)     when beta > bmax/2 (near the upper bound),
    from closed-form initial guesses (Corrado-Miller near the money, the
    asymptotic expansion of b for small s far from the money, an inverse-normal
    guess near the bound). A bracket [lo, hi] is updated at every evaluation;
    steps that leave it fall back to Newton, then to bisection.
    Convergence: a Householder step with |ds| <= 1e-5 s (the step is of the
    order of the current error and the cubic step leaves an error of order
    C * 1e-15 s), or a Newton step with |ds| <= 1e-10 s (error ~ C * 1e-20 s).
    Bisection steps never count as convergence.
    Rows without convergence after MAX_HOUSEHOLDER iterations are finished by
    plain bisection on the bracket down to adjacent doubles, so every row
    terminates with a verified bracket; there is no silent non-convergence.
    """
    bmax = math.exp(0.5 * x)
    bmin_inv = 1.0 / bmax  # exp(-x/2)
    dpm = 2.0 * math.sinh(0.5 * x)
    if not (beta > 0.0 and beta < bmax):
        return np.nan, 0
    x2 = x * x
    ax = -x
    lo = 0.0
    hi = S_MAX
    if beta <= 0.5 * bmax:
        mode = 0
        target = math.log(beta)
        sign = 1.0
        # Corrado-Miller in normalised units (good for |x|/s small)
        sh = 0.5 * dpm  # sinh(x/2)
        a = beta - sh
        disc = a * a - 4.0 * sh * sh / math.pi
        s = SQRT2PI / (2.0 * math.cosh(0.5 * x)) * (a + math.sqrt(disc if disc > 0.0 else 0.0))
        if not (s > 0.0) or ax > 1.5 * s:
            # far from the money: invert ln b ~ -x^2/(2s^2) - s^2/8 - ln sqrt(2pi) + ln(s/(x^2/s^2 - s^2/4))
            s_cm = s
            s = ax / math.sqrt(-2.0 * target)
            for _ in range(3):
                den = x2 / (s * s) - 0.25 * s * s
                if not (den > 0.0):
                    break
                aa = -target - 0.125 * s * s - 0.9189385332046728 + math.log(s / den)
                if not (aa > 0.0):
                    break
                s = ax / math.sqrt(2.0 * aa)
            if s_cm > 0.0 and ax < 2.5 * s:
                # between the two regimes: both guesses are rough, blend them
                s = math.sqrt(s * s_cm)
    else:
        mode = 2
        ut = bmax - beta
        target = math.log(ut)
        sign = -1.0
        p = ut / (bmax + 1.0 / bmax)
        s = 2.0 * _inv_norm_upper(p) if p < 0.5 else SQRT2PI * beta
    if not (s > lo and s < hi):
        s = 0.5 * (lo + hi)
    converged = False
    it = 0
    for it in range(1, MAX_HOUSEHOLDER + 1):
        bp = _bprime(x, s)
        r2 = x2 / (s * s * s) - 0.25 * s
        r3 = r2 * r2 - 3.0 * x2 / (s * s * s * s) - 0.25
        if mode == 0:
            g = _b_otm(x, s, bmax, bmin_inv, dpm)
            q = bp / g
        else:
            g = _u_otm(x, s, bmax, bmin_inv)
            q = -bp / g
        if not (g > 0.0):
            # underflow: far below the root (mode 0) / far above it (mode 2)
            if mode == 0:
                lo = s
            else:
                hi = s
            s = 0.5 * (lo + hi)
            continue
        f = math.log(g) - target
        h2 = r2 - q
        h3 = r3 - 3.0 * r2 * q + 2.0 * q * q
        sf = sign * f
        if sf < 0.0:
            lo = s
        elif sf > 0.0:
            hi = s
        else:
            converged = True
            break
        nu = -f / q
        den = 1.0 + nu * (h2 + h3 * nu / 6.0)
        tol = REL_STEP_TOL_HOUSEHOLDER
        s_new = s + nu * (1.0 + 0.5 * h2 * nu) / den if den > 0.0 else np.nan
        if not (s_new > lo and s_new < hi) and not (abs(s_new - s) <= tol * s):
            # Householder step unusable (NaN or outside the bracket): plain Newton step
            tol = REL_STEP_TOL_NEWTON
            s_new = s + nu
        if abs(s_new - s) <= tol * s:
            # converged: the step is below tolerance (clip rounding outside the bracket)
            s = min(max(s_new, lo), hi)
            converged = True
            break
        if not (s_new > lo and s_new < hi):
            s_new = 0.5 * (lo + hi)
        s = s_new
    if not converged:
        # fallback: bisection to adjacent doubles, always terminates
        for _ in range(2000):
            it += 1
            mid = 0.5 * (lo + hi)
            if not (mid > lo and mid < hi):
                break
            if _b_otm(x, mid, bmax, bmin_inv, dpm) < beta:
                lo = mid
            else:
                hi = mid
        s = 0.5 * (lo + hi)
    return s, it


@njit(cache=True, error_model="numpy")
def implied_vol_kernel(price, fwd, strike, t, r, is_call, out):
    """Inputs of length len(out) or 1 (broadcast)."""
    n = out.shape[0]
    a0 = price.shape[0] > 1
    a1 = fwd.shape[0] > 1
    a2 = strike.shape[0] > 1
    a3 = t.shape[0] > 1
    a4 = r.shape[0] > 1
    a5 = is_call.shape[0] > 1
    for i in range(n):
        p = price[i if a0 else 0]
        f = fwd[i if a1 else 0]
        k = strike[i if a2 else 0]
        tt = t[i if a3 else 0]
        rr = r[i if a4 else 0]
        c = is_call[i if a5 else 0]
        if not (
            p > 0.0 and f > 0.0 and k > 0.0 and tt > 0.0
            and p < np.inf and f < np.inf and k < np.inf and tt < np.inf
            and abs(rr) < np.inf
        ):
            out[i] = np.nan
            continue
        if c:
            intrinsic = f - k if f > k else 0.0
            upper = f
        else:
            intrinsic = k - f if k > f else 0.0
            upper = k
        df = math.exp(-rr * tt)
        # bounds as defined, on the discounted price
        if not (p > df * intrinsic and p < df * upper):
            out[i] = np.nan
            continue
        pu = p / df  # undiscounted; rows within rounding of a bound get NaN from _solve_s
        x = math.log(f / k)
        beta = (pu - intrinsic) / math.sqrt(f * k)
        s = _solve_s(beta, -abs(x))
        out[i] = s / math.sqrt(tt)


@njit(cache=True, error_model="numpy")
def price_kernel(fwd, strike, t, r, sigma, is_call, out):
    """Inputs of length len(out) or 1 (broadcast)."""
    n = out.shape[0]
    a0 = fwd.shape[0] > 1
    a1 = strike.shape[0] > 1
    a2 = t.shape[0] > 1
    a3 = r.shape[0] > 1
    a4 = sigma.shape[0] > 1
    a5 = is_call.shape[0] > 1
    for i in range(n):
        f = fwd[i if a0 else 0]
        k = strike[i if a1 else 0]
        tt = t[i if a2 else 0]
        rr = r[i if a3 else 0]
        sg = sigma[i if a4 else 0]
        c = is_call[i if a5 else 0]
        if not (f > 0.0 and k > 0.0 and f < np.inf and k < np.inf and abs(rr) < np.inf
                and abs(tt) < np.inf):
            out[i] = np.nan
            continue
        intrinsic = (f - k if f > k else 0.0) if c else (k - f if k > f else 0.0)
        if tt <= 0.0:
            out[i] = intrinsic
            continue
        if not (sg >= 0.0 and sg < np.inf):
            out[i] = np.nan
            continue
        df = math.exp(-rr * tt)
        s = sg * math.sqrt(tt)
        if s == 0.0:
            out[i] = df * intrinsic
            continue
        x = math.log(f / k)
        xo = -abs(x)
        ep = math.exp(0.5 * xo)
        out[i] = df * (intrinsic + math.sqrt(f * k) * _b_otm(xo, s, ep, 1.0 / ep, 2.0 * math.sinh(0.5 * xo)))


@njit(cache=True, error_model="numpy")
def greeks_kernel(fwd, strike, t, r, sigma, is_call, out):
    """out: (6, n) rows price, delta, gamma, theta, vega, rho. Inputs of length n or 1 (broadcast)."""
    n = out.shape[1]
    a0 = fwd.shape[0] > 1
    a1 = strike.shape[0] > 1
    a2 = t.shape[0] > 1
    a3 = r.shape[0] > 1
    a4 = sigma.shape[0] > 1
    a5 = is_call.shape[0] > 1
    for i in range(n):
        f = fwd[i if a0 else 0]
        k = strike[i if a1 else 0]
        tt = t[i if a2 else 0]
        rr = r[i if a3 else 0]
        sg = sigma[i if a4 else 0]
        c = is_call[i if a5 else 0]
        if not (f > 0.0 and k > 0.0 and tt > 0.0 and sg > 0.0
                and f < np.inf and k < np.inf and tt < np.inf and sg < np.inf
                and abs(rr) < np.inf):
            out[0, i] = np.nan
            out[1, i] = np.nan
            out[2, i] = np.nan
            out[3, i] = np.nan
            out[4, i] = np.nan
            out[5, i] = np.nan
            continue
        df = math.exp(-rr * tt)
        sqt = math.sqrt(tt)
        s = sg * sqt
        x = math.log(f / k)
        sqfk = math.sqrt(f * k)
        h = x / s
        d1 = h + 0.5 * s
        # F * phi(d1) = K * phi(d2) = sqrt(FK) * exp(-(h^2 + s^2/4)/2) / sqrt(2 pi)
        fphi = sqfk * INV_SQRT2PI * math.exp(-0.5 * (h * h + 0.25 * s * s))
        if c:
            intrinsic = f - k if f > k else 0.0
            dl = df * 0.5 * math.erfc(-d1 / SQRT2)
        else:
            intrinsic = k - f if k > f else 0.0
            dl = -df * 0.5 * math.erfc(d1 / SQRT2)
        xo = -abs(x)
        ep = math.exp(0.5 * xo)
        v = df * (intrinsic + sqfk * _b_otm(xo, s, ep, 1.0 / ep, 2.0 * math.sinh(0.5 * xo)))
        out[0, i] = v
        out[1, i] = dl
        out[2, i] = df * fphi / (f * f * s)
        out[3, i] = (rr * v - df * fphi * sg / (2.0 * sqt)) / 365.0
        out[4, i] = df * fphi * sqt * 0.01
        out[5, i] = -tt * v * 0.01
