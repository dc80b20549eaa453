"""Implied volatility: accuracy against vollib (Let's Be Rational), a brentq reference, NaN rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _reference import (
    OPTION_INPUTS,
    brentq_implied_vol,
    comparable,
    vollib_implied_vol,
    vollib_price,
)
from hypothesis import HealthCheck, given, settings

import greeks

pytestmark = pytest.mark.unit

YEAR_S = 365.0 * 86400.0
R = 0.07


def _grid():
    """Dense grid: F (NIFTY/BANKNIFTY-like and small), log-moneyness, expiry, vol, call/put."""
    fs = np.array([50.0, 1000.0, 20000.0, 50000.0])
    xs = np.array([-1.0, -0.6, -0.3, -0.1, -0.03, -0.005, 0.0, 0.005, 0.03, 0.1, 0.3, 0.6, 1.0])
    ts = np.array([30.0, 600.0, 3600.0 * 6, 86400.0 * 2, 86400.0 * 7, 86400.0 * 30,
                   86400.0 * 90, 86400.0 * 365, 86400.0 * 730]) / YEAR_S
    vols = np.array([0.01, 0.03, 0.08, 0.15, 0.3, 0.6, 1.0, 2.0, 3.0])
    calls = np.array([True, False])
    g = np.meshgrid(fs, xs, ts, vols, calls, indexing="ij")
    f, x, t, v, c = (a.ravel() for a in g)
    k = f * np.exp(-x)
    return f, k, t, v, c


def test_dense_grid_reprices_within_1e9_relative():
    f, k, t, v, c = _grid()
    price = greeks.black76_price(f, k, t, R, v, c)
    iv = greeks.implied_vol(price, f, k, t, R, c)
    rows = comparable(price, f, k, t, R, v, c)
    assert rows.sum() > 1500
    assert not np.isnan(iv[rows]).any()
    repriced = greeks.black76_price(f, k, t, R, iv, c)
    rel = np.abs(repriced[rows] - price[rows]) / price[rows]
    assert rel.max() <= 1e-9
    assert np.abs(iv[rows] - v[rows]).max() <= 1e-8


def test_dense_grid_any_tick_price_reprices_or_is_nan_at_intrinsic():
    """Every row priced at >= 0.05 either reprices within 1e-9 or is NaN because its
    time value is not representable (price == discounted intrinsic in double)."""
    f, k, t, v, c = _grid()
    price = greeks.black76_price(f, k, t, R, v, c)
    iv = greeks.implied_vol(price, f, k, t, R, c)
    tick = price >= 0.05
    nan = np.isnan(iv) & tick
    intrinsic = np.where(c, np.maximum(f - k, 0), np.maximum(k - f, 0)) * np.exp(-R * t)
    assert np.all(price[nan] - intrinsic[nan] <= 4e-16 * np.maximum(f, k)[nan])
    ok = tick & ~nan
    repriced = greeks.black76_price(f, k, t, R, iv, c)
    assert np.all(np.abs(repriced[ok] - price[ok]) <= 1e-9 * price[ok])


def test_dense_grid_matches_vollib_within_1e8_absolute():
    f, k, t, v, c = _grid()
    price = greeks.black76_price(f, k, t, R, v, c)
    rows = np.flatnonzero(comparable(price, f, k, t, R, v, c))
    iv = greeks.implied_vol(price, f, k, t, R, c)
    ref = np.array([vollib_implied_vol(price[i], f[i], k[i], t[i], R, bool(c[i])) for i in rows])
    assert np.abs(iv[rows] - ref).max() <= 1e-8


def test_grid_prices_match_vollib_within_1e12_relative():
    f, k, t, v, c = _grid()
    price = greeks.black76_price(f, k, t, R, v, c)
    rows = np.flatnonzero(price >= 0.05)[::7]
    ref = np.array([vollib_price(f[i], k[i], t[i], R, v[i], bool(c[i])) for i in rows])
    assert np.all(np.abs(price[rows] - ref) <= 1e-12 * ref)


def test_tick_size_prices_nifty_and_small_forward_match_vollib():
    """Quoted prices at and just above one tick (0.05), straight from the market grid."""
    rng = np.random.default_rng(7)
    n = 400
    f = np.where(rng.random(n) < 0.5, rng.uniform(20000, 50000, n), rng.uniform(20, 500, n))
    call = rng.random(n) < 0.5
    k = f * np.exp(np.where(call, 1, -1) * rng.uniform(0.0, 1.0, n))  # OTM strikes
    t = np.exp(rng.uniform(math.log(30 / YEAR_S), math.log(2.0), n))
    price = rng.choice([0.05, 0.1, 0.15, 0.5, 1.0], n)
    iv = greeks.implied_vol(price, f, k, t, R, call)
    ok = ~np.isnan(iv)
    assert ok.sum() > 300  # NaN only where 0.05 exceeds the bound for tiny F/K
    repriced = greeks.black76_price(f, k, t, R, iv, call)
    assert np.all(np.abs(repriced[ok] - price[ok]) <= 1e-9 * price[ok])
    rows = np.flatnonzero(ok & comparable(price, f, k, t, R, np.where(ok, iv, 1.0), call))
    ref = np.array([vollib_implied_vol(price[i], f[i], k[i], t[i], R, bool(call[i])) for i in rows])
    assert np.abs(iv[rows] - ref).max() <= 1e-8


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**OPTION_INPUTS)
def test_random_inputs_roundtrip_and_match_vollib(f, x, t_s, vol, r, call):
    k = f * math.exp(-x)
    t = t_s / YEAR_S
    price = float(greeks.black76_price(f, k, t, r, vol, call))
    iv = float(greeks.implied_vol(price, f, k, t, r, call))
    if comparable(price, f, k, t, r, vol, call):
        assert not math.isnan(iv)
        assert abs(float(greeks.black76_price(f, k, t, r, iv, call)) - price) <= 1e-9 * price
        assert abs(iv - vol) <= 1e-8
        assert abs(iv - vollib_implied_vol(price, f, k, t, r, call)) <= 1e-8
    elif not math.isnan(iv):
        # outside the comparison rule, a returned number must still reprice the price
        repriced = float(greeks.black76_price(f, k, t, r, iv, call))
        assert abs(repriced - price) <= 1e-9 * price + 4e-16 * max(f, k)


def test_fast_path_matches_brentq_scalar_reference():
    rng = np.random.default_rng(3)
    n = 300
    f = rng.uniform(20000, 50000, n)
    k = f * np.exp(rng.uniform(-0.4, 0.4, n))
    t = np.exp(rng.uniform(math.log(1 / 365), math.log(1.0), n))
    vol = rng.uniform(0.05, 1.0, n)
    call = rng.random(n) < 0.5
    price = greeks.black76_price(f, k, t, R, vol, call)
    rows = np.flatnonzero(comparable(price, f, k, t, R, vol, call))
    iv = greeks.implied_vol(price, f, k, t, R, call)
    ref = np.array([brentq_implied_vol(price[i], f[i], k[i], t[i], R, bool(call[i])) for i in rows])
    # the textbook reference loses digits to cancellation for small time values
    assert np.abs(iv[rows] - ref).max() <= 1e-9


def test_call_and_put_at_parity_give_same_vol():
    f = np.full(5, 22000.0)
    k = np.array([20000.0, 21500, 22000, 22500, 24000])
    t, vol = 10 / 365, 0.17
    c = greeks.black76_price(f, k, t, R, vol, True)
    p = greeks.black76_price(f, k, t, R, vol, False)
    ivc = greeks.implied_vol(c, f, k, t, R, True)
    ivp = greeks.implied_vol(p, f, k, t, R, False)
    np.testing.assert_allclose(ivc, vol, atol=1e-10)
    np.testing.assert_allclose(ivp, vol, atol=1e-10)


# ---------------------------------------------------------------- NaN rules

F0, K0, T0 = 22000.0, 21000.0, 7 / 365


def test_price_below_discounted_intrinsic_nan():
    intrinsic = (F0 - K0) * math.exp(-R * T0)
    assert np.isnan(greeks.implied_vol(intrinsic - 0.05, F0, K0, T0, R, True))
    assert np.isnan(greeks.implied_vol(0.01, F0, K0 - 5000, T0, R, True))


def test_price_equal_discounted_intrinsic_nan():
    intrinsic = (F0 - K0) * math.exp(-R * T0)
    assert np.isnan(greeks.implied_vol(intrinsic, F0, K0, T0, R, True))


def test_price_at_or_above_upper_bound_nan():
    df = math.exp(-R * T0)
    prices = np.array([F0 * df, F0 * df + 1, K0 * df, K0 * df * 2])
    calls = np.array([True, True, False, False])
    assert np.isnan(greeks.implied_vol(prices, F0, K0, T0, R, calls)).all()
    # just below the bound is a (huge) valid vol
    assert greeks.implied_vol(F0 * df * (1 - 1e-6), F0, K0, T0, R, True) > 3


@pytest.mark.parametrize("t", [0.0, -1e-9, -0.01, np.nan, np.inf])
def test_nonpositive_or_nonfinite_time_nan(t):
    assert np.isnan(greeks.implied_vol(300.0, F0, F0, t, R, True))


@pytest.mark.parametrize(
    "price,f,k,r",
    [
        (0.0, F0, K0, R), (-1.0, F0, K0, R), (np.nan, F0, K0, R), (np.inf, F0, K0, R),
        (300.0, 0.0, K0, R), (300.0, -F0, K0, R), (300.0, np.nan, K0, R), (300.0, np.inf, K0, R),
        (300.0, F0, 0.0, R), (300.0, F0, -K0, R), (300.0, F0, np.nan, R),
        (300.0, F0, K0, np.nan), (300.0, F0, K0, np.inf),
    ],
)
def test_zero_negative_or_nan_inputs_nan(price, f, k, r):
    assert np.isnan(greeks.implied_vol(price, f, k, T0, r, False))


def test_bad_rows_do_not_spoil_good_rows():
    price = np.array([np.nan, 300.0, -1.0, 300.0])
    f = np.array([F0, np.nan, F0, F0])
    iv = greeks.implied_vol(price, f, F0, T0, R, True)
    assert np.isnan(iv[:3]).all() and 0.01 < iv[3] < 1.0


# ---------------------------------------------------------------- shapes

def test_scalar_inputs_return_0d_array():
    iv = greeks.implied_vol(300.0, F0, F0, T0, R, True)
    assert isinstance(iv, np.ndarray) and iv.shape == ()


def test_scalars_broadcast_against_arrays_keep_shape():
    k = np.array([[21000.0, 22000.0, 23000.0], [21500.0, 22500.0, 23500.0]])
    price = greeks.black76_price(F0, k, T0, R, 0.2, np.array([True, False, True]))
    iv = greeks.implied_vol(price, F0, k, T0, np.full((2, 1), R), np.array([True, False, True]))
    assert iv.shape == (2, 3)
    np.testing.assert_allclose(iv, 0.2, atol=1e-12)


def test_size_one_arrays_of_higher_rank_broadcast_like_numpy():
    k = np.array([21000.0, 22000.0, 23000.0])
    price = greeks.black76_price(F0, k, T0, np.full((1, 1), R), 0.2, True)
    assert price.shape == (1, 3)
    iv = greeks.implied_vol(price, np.full((1, 1, 1), F0), k, T0, R, np.array([True]))
    assert iv.shape == (1, 1, 3)
    np.testing.assert_allclose(iv[0, 0], 0.2, atol=1e-12)
    g = greeks.black76_greeks(F0, F0, T0, R, np.array([[0.2]]), False)
    assert all(a.shape == (1, 1) for a in g)


def test_empty_arrays_return_empty():
    e = np.array([], dtype=float)
    assert greeks.implied_vol(e, e, e, e, R, np.array([], dtype=bool)).shape == (0,)
    assert greeks.black76_price(e, e, e, R, e, np.array([], dtype=bool)).shape == (0,)
    g = greeks.black76_greeks(e, e, e, R, e, np.array([], dtype=bool))
    assert all(a.shape == (0,) for a in g)


def test_integer_and_list_inputs_accepted():
    iv = greeks.implied_vol([300, 250], [22000, 22000], [22000, 22100], [0.02, 0.02], 0, [1, 0])
    assert iv.dtype == np.float64 and not np.isnan(iv).any()
