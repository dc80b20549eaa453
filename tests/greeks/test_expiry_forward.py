"""Time to expiry (15:30 IST, 365-day years) and the put-call-parity forward."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

import greeks

pytestmark = pytest.mark.unit

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


def _epoch(y, m, d, hh, mm, ss=0):
    return dt.datetime(y, m, d, hh, mm, ss, tzinfo=IST).timestamp()


def test_expiry_close_date_string_datetime64_agree():
    want = _epoch(2026, 11, 26, 15, 30)
    assert float(greeks.expiry_close_ts(dt.date(2026, 11, 26))) == want
    assert float(greeks.expiry_close_ts("2026-11-26")) == want
    assert float(greeks.expiry_close_ts(np.datetime64("2026-11-26"))) == want
    arr = greeks.expiry_close_ts(np.array(["2026-11-26", "2026-12-31"], dtype="datetime64[D]"))
    np.testing.assert_array_equal(arr, [want, _epoch(2026, 12, 31, 15, 30)])
    lst = greeks.expiry_close_ts([dt.date(2026, 11, 26), dt.date(2026, 12, 31)])
    np.testing.assert_array_equal(lst, arr)


def test_years_to_expiry_one_day_is_1_over_365():
    close = greeks.expiry_close_ts("2026-11-26")
    ts = _epoch(2026, 11, 25, 15, 30)
    assert float(greeks.years_to_expiry(ts, close)) == pytest.approx(1 / 365, rel=1e-15)


def test_expiry_day_before_close_positive_and_priced():
    close = greeks.expiry_close_ts("2026-11-26")
    ts = np.array([_epoch(2026, 11, 26, 9, 15), _epoch(2026, 11, 26, 15, 29, 30)])
    t = greeks.years_to_expiry(ts, close)
    np.testing.assert_allclose(t, [(6 * 3600 + 15 * 60) / (365 * 86400), 30 / (365 * 86400)], rtol=1e-12)
    price = greeks.black76_price(22000.0, 22000.0, t, 0.07, 0.15, True)
    iv = greeks.implied_vol(price, 22000.0, 22000.0, t, 0.07, True)
    np.testing.assert_allclose(iv, 0.15, atol=1e-10)


def test_at_and_after_close_t_nonpositive_iv_nan_price_intrinsic():
    close = greeks.expiry_close_ts("2026-11-26")
    ts = np.array([_epoch(2026, 11, 26, 15, 30), _epoch(2026, 11, 26, 15, 45)])
    t = greeks.years_to_expiry(ts, close)
    assert t[0] == 0.0 and t[1] < 0.0
    assert np.isnan(greeks.implied_vol(5.0, 22000.0, 22000.0, t, 0.07, True)).all()
    assert all(np.isnan(a).all() for a in greeks.black76_greeks(22000.0, 22000.0, t, 0.07, 0.15, True))
    np.testing.assert_array_equal(greeks.black76_price(22010.0, 22000.0, t, 0.07, 0.15, True), [10.0, 10.0])


def test_forward_from_parity_recovers_forward():
    f, k, t, r = 22123.45, np.array([21900.0, 22100.0, 22300.0]), 8 / 365, 0.068
    c = greeks.black76_price(f, k, t, r, 0.13, True)
    p = greeks.black76_price(f, k, t, r, 0.13, False)
    np.testing.assert_allclose(greeks.forward_from_parity(c, p, k, t, r), f, rtol=1e-13)
    assert float(greeks.forward_from_parity(100.0, 50.0, 22000.0, 0.0, r)) == 22050.0
    assert math.isnan(float(greeks.forward_from_parity(np.nan, 50.0, 22000.0, 0.1, r)))


def test_forward_for_expiry_prefers_the_same_expiry_future():
    f, source = greeks.forward_for_expiry(np.array([0.01, 0.02]), 0.065, future_price=24650.0,
                                          strikes=[24500.0], call_prices=[300.0], put_prices=[150.0], spot=24500.0)
    np.testing.assert_array_equal(f, [24650.0, 24650.0])
    assert source == "future"


def test_forward_for_expiry_uses_parity_at_the_strike_nearest_the_money():
    t, r = 0.02, 0.065
    strikes = np.array([24000.0, 24500.0, 25000.0])
    true_f = 24600.0
    disc = math.exp(-r * t)
    calls = greeks.black76_price(true_f, strikes, t, r, 0.13, True)
    puts = greeks.black76_price(true_f, strikes, t, r, 0.13, False)
    puts[1] = np.nan  # 24500 is nearest the money but has no put quote: 25000 is used
    f, source = greeks.forward_for_expiry(np.array([t]), r, strikes=strikes, call_prices=calls, put_prices=puts,
                                          spot=24580.0, near=1)
    assert source == "parity"
    assert f[0] == pytest.approx(25000.0 + (calls[2] - puts[2]) / disc, rel=1e-12)
    assert f[0] == pytest.approx(true_f, rel=1e-9)


def test_forward_for_expiry_parity_is_the_median_of_the_nearest_strikes_so_one_bad_pair_cannot_move_it():
    t, r, true_f = 0.02, 0.065, 24600.0
    strikes = np.arange(24300.0, 24951.0, 50.0)
    calls = greeks.black76_price(true_f, strikes, t, r, 0.13, True)
    puts = greeks.black76_price(true_f, strikes, t, r, 0.13, False)
    calls[6] += 40.0  # the pair nearest the money is off by 40 rupees
    one, _ = greeks.forward_for_expiry(np.array([t]), r, strikes=strikes, call_prices=calls, put_prices=puts,
                                       spot=24550.0, near=1)
    five, _ = greeks.forward_for_expiry(np.array([t]), r, strikes=strikes, call_prices=calls, put_prices=puts,
                                        spot=24550.0, near=5)
    assert abs(one[0] - true_f) > 30
    assert five[0] == pytest.approx(true_f, abs=1e-6)


def test_forward_for_expiry_falls_back_to_spot_carry_then_nan():
    t = np.array([0.1])
    f, source = greeks.forward_for_expiry(t, 0.05, spot=20000.0, strikes=[20000.0], call_prices=[100.0],
                                          put_prices=[0.0])
    assert f[0] == pytest.approx(20000.0 * math.exp(0.005), rel=1e-15) and source == "carry"
    f, source = greeks.forward_for_expiry(t, 0.05)
    assert np.isnan(f[0]) and source == ""
