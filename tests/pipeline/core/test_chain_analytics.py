"""Gamma exposure, its flip level, OI build-up and 25-delta skew (pipeline.core.chain_analytics), against
plain recomputations, and as the rollup emits them."""

from __future__ import annotations

import math

import numpy as np
import pytest

import greeks
from pipeline.core.chain_analytics import (
    BUILDUPS,
    buildup,
    gamma_exposure,
    gex_flip,
    wing_ivs,
)

pytestmark = pytest.mark.unit


def test_gamma_exposure_is_signed_oi_times_gamma_times_forward_squared_per_percent() -> None:
    oi, gamma, forward = np.array([1000.0, np.nan]), np.array([0.0004, 0.0004]), 22000.0
    calls = gamma_exposure(oi, gamma, forward, True)
    puts = gamma_exposure(oi, gamma, forward, False)
    assert calls[0] == pytest.approx(1000 * 0.0004 * 22000**2 * 0.01)
    assert puts[0] == pytest.approx(-calls[0]) and np.isnan(calls[1])


def test_buildup_labels_every_sign_combination_and_none_for_a_zero_change() -> None:
    price = np.array([1.0, -1.0, 1.0, -1.0, 0.0, 1.0])
    oi = np.array([10, 10, -10, -10, 10, 0])
    labels = [BUILDUPS[c] for c in buildup(price, oi)]
    assert labels == ["long_buildup", "short_buildup", "short_covering", "long_unwinding", "", ""]


def _total_gex(level: float, strikes, t, call_oi, put_oi, call_iv, put_iv) -> float:  # noqa: ANN001
    """Plainly: the sum over options of +/- OI x gamma(F = level) x level^2 x 0.01."""
    total = 0.0
    for k, coi, poi, civ, piv in zip(strikes, call_oi, put_oi, call_iv, put_iv, strict=True):
        for oi, iv, is_call, sign in ((coi, civ, True, 1.0), (poi, piv, False, -1.0)):
            gamma = float(greeks.black76_greeks(level, k, t, 0.0, iv, is_call).gamma)
            total += sign * oi * gamma * level * level * 0.01
    return total


def test_gex_flip_is_where_the_recomputed_total_changes_sign_between_strikes() -> None:
    strikes = np.arange(21500.0, 22501.0, 100.0)
    t = 7 / 365
    call_oi = np.where(strikes >= 22000, 5e5, 1e5)  # call OI above the money, put OI below
    put_oi = np.where(strikes <= 22000, 5e5, 1e5)
    iv = np.full(len(strikes), 0.15)
    flip = gex_flip(strikes, 22010.0, t, call_oi, put_oi, iv, iv)
    totals = [_total_gex(k, strikes, t, call_oi, put_oi, iv, iv) for k in strikes]
    i = next(j for j in range(len(strikes) - 1) if totals[j] * totals[j + 1] < 0)
    want = strikes[i] + totals[i] / (totals[i] - totals[i + 1]) * 100.0
    assert flip == pytest.approx(want, rel=1e-9)
    assert strikes[i] < flip < strikes[i + 1]


def test_gex_flip_is_nan_when_the_total_never_changes_sign() -> None:
    strikes = np.arange(21500.0, 22501.0, 100.0)
    only_calls = gex_flip(strikes, 22000.0, 0.02, np.full(11, 1e5), np.zeros(11), np.full(11, 0.15),
                          np.full(11, np.nan))
    assert math.isnan(only_calls)


def test_wing_ivs_interpolate_linearly_in_delta_and_are_nan_outside_the_deltas_seen() -> None:
    call_delta, call_iv = np.array([0.6, 0.4, 0.2, 0.1]), np.array([0.14, 0.15, 0.17, 0.2])
    put_delta, put_iv = np.array([-0.1, -0.3, -0.5]), np.array([0.22, 0.18, 0.16])
    c25, p25 = wing_ivs(call_delta, call_iv, put_delta, put_iv)
    assert c25 == pytest.approx(0.17 + (0.25 - 0.2) / (0.4 - 0.2) * (0.15 - 0.17))
    assert p25 == pytest.approx(0.22 + (-0.25 - -0.1) / (-0.3 - -0.1) * (0.18 - 0.22))
    assert all(math.isnan(x) for x in wing_ivs(np.array([0.6, 0.4]), np.array([0.1, 0.1]), np.array([]), np.array([])))
