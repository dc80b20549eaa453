"""Implied-vol solver internals: iteration counts, and the bisection fallback on its own."""

from __future__ import annotations

import math

import numpy as np
import pytest

from greeks import _kernels

pytestmark = pytest.mark.unit


def _normalised_grid():
    xs = -np.array([0.0, 1e-6, 1e-3, 0.01, 0.05, 0.1, 0.3, 0.6, 1.0, 2.0])
    ss = np.array([1e-5, 1e-4, 1e-3, 0.01, 0.03, 0.1, 0.3, 0.6, 1.0, 2.0, 4.0, 6.0])
    rows = []
    for x in xs:
        ep = math.exp(0.5 * x)
        for s in ss:
            b = _kernels._b_otm(x, s, ep, 1.0 / ep, 2 * math.sinh(0.5 * x))
            if 1e-200 < b < ep * (1 - 1e-12):
                rows.append((x, s, b))
    return rows


def test_normalised_grid_converges_in_few_householder_iterations():
    rows = _normalised_grid()
    assert len(rows) > 80
    for x, s, b in rows:
        s_hat, iters = _kernels._solve_s_iter(b, x)
        assert 1 <= iters <= 8, (x, s, iters)  # never reaches the bisection fallback
        ep = math.exp(0.5 * x)
        b_hat = _kernels._b_otm(x, s_hat, ep, 1 / ep, 2 * math.sinh(0.5 * x))
        # below b = 1e-12 (far below one tick for any index) the normalised price
        # itself carries up to ~1e-9 relative rounding noise (argument rounding of
        # erfc amplified by the cancellation of its two terms)
        tol = 1e-12 if b >= 1e-12 else 1e-8
        assert abs(s_hat - s) <= tol * s or abs(b_hat - b) <= tol * b, (x, s, s_hat)


def test_bisection_fallback_alone_reaches_same_root(monkeypatch):
    """With zero Householder iterations allowed every row goes through the fallback."""
    monkeypatch.setattr(_kernels, "MAX_HOUSEHOLDER", 0)
    solve = _kernels._solve_s_iter.py_func  # pure-Python body reads the patched global
    for x, s, b in _normalised_grid()[::3]:
        s_bis, iters = solve(b, x)
        assert iters > 8  # it really bisected
        s_fast, _ = _kernels._solve_s_iter(b, x)
        ep = math.exp(0.5 * x)
        rel = abs(_kernels._b_otm(x, s_bis, ep, 1 / ep, 2 * math.sinh(0.5 * x)) - b) / b
        # b itself carries rounding noise far from the money at tiny s (see above),
        # so two solvers may stop at different points of that noise band
        tol = 1e-11 if b >= 1e-12 else 1e-8
        assert rel <= tol and abs(s_bis - s_fast) <= tol * s_fast, (x, s, s_bis, s_fast)


@pytest.mark.parametrize("beta,x", [(0.0, -0.1), (-1e-3, -0.1), (math.exp(-0.05), -0.1), (1.0, 0.0), (np.nan, -0.1)])
def test_normalised_price_outside_bounds_nan(beta, x):
    s, iters = _kernels._solve_s_iter(beta, x)
    assert math.isnan(s) and iters == 0
