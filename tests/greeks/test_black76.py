"""Black-76 price and Greeks: conventions, vollib agreement (1e-8 relative), finite differences, NaN rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _reference import (
    OPTION_INPUTS,
    VOLLIB_GREEK_MAP,
    plain_price,
    vollib_greek,
    vollib_price,
)
from hypothesis import given, settings

import greeks

pytestmark = pytest.mark.unit

YEAR_S = 365.0 * 86400.0
NAMES = ("delta", "gamma", "theta", "vega", "rho")
TINY = float(np.finfo(float).tiny)


def _greek_scale(name, f, k, t, r, sigma, price):
    """Magnitude of the terms in the textbook formula of each Greek.

    Stated rule for the 1e-8 relative comparison: the error allowed is
    1e-8 * max(|reference|, scale). Only theta has terms that can cancel
    (r V against the decay term); its scale is the sum of the magnitudes of
    its terms. For the other Greeks scale is 0 (pure relative comparison).
    """
    if name != "theta":
        return 0.0
    s = sigma * math.sqrt(t)
    d1 = math.log(f / k) / s + 0.5 * s
    decay = math.exp(-r * t) * f * math.exp(-0.5 * d1 * d1) / math.sqrt(2 * math.pi) * sigma / (2 * math.sqrt(t))
    carry = abs(r) * math.exp(-r * t) * (f + k)
    return (decay + carry) / 365.0


def _check_against_vollib(f, k, t, r, sigma, call):
    g = greeks.black76_greeks(f, k, t, r, sigma, call)
    ref_price = vollib_price(f, k, t, r, sigma, call)
    assert abs(float(g.price) - ref_price) <= 1e-10 * ref_price
    for name in NAMES:
        ours = float(getattr(g, name))
        ref = vollib_greek(name, f, k, t, r, sigma, call)
        # stated rule: 1e-8 relative to max(|ref|, scale); values in the subnormal
        # range (< 2.2e-308, e.g. gamma of a deep ITM option seconds before expiry)
        # have no relative precision left and are compared absolutely at that level
        tol = max(1e-8 * max(abs(ref), _greek_scale(name, f, k, t, r, sigma, ref_price)), TINY)
        assert abs(ours - ref) <= tol, (name, ours, ref)


def test_vollib_conventions_map_is_identity():
    """vollib: delta/gamma w.r.t. F, theta per day, vega per 1 %, rho per 1 % (read from its source)."""
    assert all(factor == 1.0 for _, factor in VOLLIB_GREEK_MAP.values())
    # vollib's own doctest values (Hull-like example), checked against ours
    g = greeks.black76_greeks(49.0, 50.0, 0.3846, 0.05, 0.2, True)
    assert abs(float(g.delta) - 0.45107017482201828) < 1e-6
    assert abs(float(g.theta) - -0.00816236877462) < 1e-6
    assert abs(float(g.gamma) - 0.0640646705882) < 1e-6
    assert abs(float(g.vega) - 0.118317785624) < 1e-6
    assert abs(float(g.rho) - -0.0074705380059582258) < 1e-6


@pytest.mark.parametrize("f", [50.0, 20000.0, 50000.0])
@pytest.mark.parametrize("x", [-1.0, -0.2, -0.01, 0.0, 0.05, 0.5, 1.0])
@pytest.mark.parametrize("t_s", [30.0, 86400.0, 86400.0 * 30, 2 * YEAR_S])
@pytest.mark.parametrize("vol", [0.01, 0.2, 3.0])
def test_grid_greeks_match_vollib_within_1e8_relative(f, x, t_s, vol):
    k = f * math.exp(-x)
    t = t_s / YEAR_S
    for call in (True, False):
        price = float(greeks.black76_price(f, k, t, 0.07, vol, call))
        if price < 0.05:  # stated rule: below one tick the Greeks are not compared
            continue
        _check_against_vollib(f, k, t, 0.07, vol, call)


@settings(max_examples=300, deadline=None)
@given(**OPTION_INPUTS)
def test_random_greeks_match_vollib_within_1e8_relative(f, x, t_s, vol, r, call):
    k = f * math.exp(-x)
    t = t_s / YEAR_S
    price = float(greeks.black76_price(f, k, t, r, vol, call))
    if price >= 0.05:
        _check_against_vollib(f, k, t, r, vol, call)


def test_greeks_match_central_finite_differences():
    """Independent check of units and signs: bump-and-revalue with the price function."""
    f, k, t, r, vol = 22000.0, 22300.0, 9 / 365, 0.065, 0.14
    for call in (True, False):
        g = greeks.black76_greeks(f, k, t, r, vol, call)

        def p(ff=f, tt=t, rr=r, vv=vol):
            return float(greeks.black76_price(ff, k, tt, rr, vv, call))

        hf, ht, hr, hv = 0.5, 1e-5, 1e-5, 1e-5
        assert float(g.delta) == pytest.approx((p(ff=f + hf) - p(ff=f - hf)) / (2 * hf), rel=1e-6)
        assert float(g.gamma) == pytest.approx((p(ff=f + hf) - 2 * p() + p(ff=f - hf)) / hf**2, rel=1e-4)
        d_dt = (p(tt=t + ht) - p(tt=t - ht)) / (2 * ht)
        assert float(g.theta) == pytest.approx(-d_dt / 365.0, rel=1e-6)
        assert float(g.vega) == pytest.approx((p(vv=vol + hv) - p(vv=vol - hv)) / (2 * hv) * 0.01, rel=1e-6)
        assert float(g.rho) == pytest.approx((p(rr=r + hr) - p(rr=r - hr)) / (2 * hr) * 0.01, rel=1e-6)
        assert float(g.theta) < 0


def test_price_matches_plain_textbook_formula():
    rng = np.random.default_rng(11)
    n = 200
    f = rng.uniform(20000, 50000, n)
    k = f * np.exp(rng.uniform(-0.3, 0.3, n))
    t = rng.uniform(1 / 365, 1.0, n)
    vol = rng.uniform(0.05, 0.8, n)
    call = rng.random(n) < 0.5
    ours = greeks.black76_price(f, k, t, 0.07, vol, call)
    ref = np.array([plain_price(f[i], k[i], t[i], 0.07, vol[i], bool(call[i])) for i in range(n)])
    big = ref > 1.0
    np.testing.assert_allclose(ours[big], ref[big], rtol=1e-10)


def test_put_call_parity_of_price_and_delta_holds():
    f, t, r, vol = 45000.0, 0.1, 0.07, 0.2
    k = np.linspace(40000, 50000, 21)
    c = greeks.black76_greeks(f, k, t, r, vol, True)
    p = greeks.black76_greeks(f, k, t, r, vol, False)
    df = math.exp(-r * t)
    np.testing.assert_allclose(c.price - p.price, df * (f - k), atol=1e-9 * f)
    np.testing.assert_allclose(c.delta - p.delta, df, atol=1e-14)
    np.testing.assert_allclose(c.gamma, p.gamma, rtol=1e-13)
    np.testing.assert_allclose(c.vega, p.vega, rtol=1e-13)


def test_nan_sigma_gives_nan_greeks():
    g = greeks.black76_greeks(22000.0, 22000.0, 0.02, 0.07, np.array([np.nan, 0.2]), True)
    assert all(np.isnan(a[0]) for a in g)
    assert all(not np.isnan(a[1]) for a in g)


@pytest.mark.parametrize("sigma", [0.0, -0.1, np.inf])
def test_nonpositive_or_infinite_sigma_gives_nan_greeks(sigma):
    g = greeks.black76_greeks(22000.0, 22000.0, 0.02, 0.07, sigma, False)
    assert all(np.isnan(a) for a in g)


@pytest.mark.parametrize("t", [0.0, -0.001])
def test_expired_greeks_nan_and_price_intrinsic(t):
    g = greeks.black76_greeks(22000.0, 21000.0, t, 0.07, 0.2, True)
    assert all(np.isnan(a) for a in g)
    price = greeks.black76_price(22000.0, np.array([21000.0, 23000.0]), t, 0.07, 0.2, np.array([True, False]))
    np.testing.assert_array_equal(price, [1000.0, 1000.0])


def test_zero_sigma_price_is_discounted_intrinsic_and_nan_sigma_price_nan():
    p = greeks.black76_price(22000.0, 21000.0, 0.5, 0.07, np.array([0.0, np.nan, -0.2]), True)
    assert p[0] == pytest.approx(1000.0 * math.exp(-0.035), rel=1e-15)
    assert np.isnan(p[1:]).all()


@pytest.mark.parametrize("f,k", [(0.0, 100.0), (-1.0, 100.0), (np.nan, 100.0), (100.0, 0.0), (100.0, np.nan)])
def test_bad_forward_or_strike_nan(f, k):
    assert np.isnan(greeks.black76_price(f, k, 0.1, 0.07, 0.2, True))
    assert all(np.isnan(a) for a in greeks.black76_greeks(f, k, 0.1, 0.07, 0.2, True))


def test_greeks_namedtuple_broadcast_shapes_match():
    g = greeks.black76_greeks(np.array([[22000.0], [22100.0]]), np.array([21000.0, 22000.0, 23000.0]),
                              0.05, 0.07, 0.2, True)
    assert isinstance(g, greeks.Greeks) and g._fields == ("price", "delta", "gamma", "theta", "vega", "rho")
    assert all(a.shape == (2, 3) for a in g)


def test_vectorised_equals_row_by_row():
    rng = np.random.default_rng(5)
    n = 50
    f = rng.uniform(20000, 50000, n)
    k = f * np.exp(rng.uniform(-0.3, 0.3, n))
    t = rng.uniform(0.001, 1, n)
    vol = rng.uniform(0.05, 1, n)
    call = rng.random(n) < 0.5
    g = greeks.black76_greeks(f, k, t, 0.07, vol, call)
    for i in range(n):
        gi = greeks.black76_greeks(f[i], k[i], t[i], 0.07, vol[i], call[i])
        for a, b in zip(g, gi):
            assert a[i] == float(b)
