"""The model-free volatility index (Cboe's VIX method) on the VIX white paper's own chain, and on a
flat-volatility Black-76 chain.

The chain is the 2009 white paper's appendix (SPX, near term 9 days, next term 37 days, r = 0.38 %),
as transcribed in the public repository khrapovs/vix (data/options.csv): ``data/cboe_vix_white_paper_2009.csv``.
The forward and K0 are checked against the paper's own derivation (the strike where the call and put
mids are closest, F = K + e^{RT} (C - P)); the variance against a plain loop written here from the
paper's formula, and the index likewise.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

import greeks

pytestmark = pytest.mark.unit

R = 0.0038
T1 = ((9 - 1) * 1440 + 510 + 930) / 525_600
T2 = ((37 - 1) * 1440 + 510 + 930) / 525_600
CHAIN = Path(__file__).with_name("data") / "cboe_vix_white_paper_2009.csv"


def _term(days: int) -> dict[str, np.ndarray]:
    with CHAIN.open() as f:
        rows = [r for r in csv.DictReader(f) if int(r["Days"]) == days]
    return {name: np.array([float(r[col]) for r in rows]) for name, col in (
        ("strikes", "Strike"), ("call_bid", "Call Bid"), ("call_ask", "Call Ask"),
        ("put_bid", "Put Bid"), ("put_ask", "Put Ask"))}


def _reference_variance(q: dict[str, np.ndarray], t: float) -> tuple[float, float, float]:
    """(variance, F, K0) by the white paper's steps, one strike at a time."""
    rows = list(zip(*(q[n].tolist() for n in ("strikes", "call_bid", "call_ask", "put_bid", "put_ask")), strict=True))
    best = min((abs((cb + ca) / 2 - (pb + pa) / 2), k, (cb + ca) / 2 - (pb + pa) / 2)
               for k, cb, ca, pb, pa in rows if cb > 0 and pb > 0)
    forward = best[1] + math.exp(R * t) * best[2]
    k0 = max(k for k, *_ in rows if k <= forward)
    chosen = {}  # strike -> Q
    for side, walk in (("put", [r for r in reversed(rows) if r[0] < k0]), ("call", [r for r in rows if r[0] > k0])):
        zeros = 0
        for k, cb, ca, pb, pa in walk:
            bid, mid = (pb, (pb + pa) / 2) if side == "put" else (cb, (cb + ca) / 2)
            if bid == 0:
                zeros += 1
                if zeros == 2:
                    break
                continue
            zeros = 0
            chosen[k] = mid
    at = next(r for r in rows if r[0] == k0)
    chosen[k0] = ((at[1] + at[2]) / 2 + (at[3] + at[4]) / 2) / 2
    ks = sorted(chosen)
    total = 0.0
    for i, k in enumerate(ks):
        if i == 0:
            dk = ks[1] - ks[0]
        elif i == len(ks) - 1:
            dk = ks[-1] - ks[-2]
        else:
            dk = (ks[i + 1] - ks[i - 1]) / 2
        total += dk / k**2 * math.exp(R * t) * chosen[k]
    return 2 / t * total - (forward / k0 - 1) ** 2 / t, forward, k0


def test_white_paper_forwards_and_k0_are_the_papers() -> None:
    near = greeks.expiry_variance(**_term(9), t=T1, r=R)
    nxt = greeks.expiry_variance(**_term(37), t=T2, r=R)
    # near term: call and put mids closest at 920 (37.15 vs 36.65); next term at 920 (61.55 vs 60.55)
    assert near.forward == pytest.approx(920 + math.exp(R * T1) * (37.15 - 36.65), abs=1e-9)
    assert nxt.forward == pytest.approx(920 + math.exp(R * T2) * (61.55 - 60.55), abs=1e-9)
    assert near.k0 == nxt.k0 == 920.0
    assert near.forward == pytest.approx(920.50005, abs=1e-5)


@pytest.mark.parametrize(("days", "t"), [(9, T1), (37, T2)])
def test_white_paper_variance_equals_the_papers_formula_step_by_step(days: int, t: float) -> None:
    got = greeks.expiry_variance(**_term(days), t=t, r=R)
    want, forward, k0 = _reference_variance(_term(days), t)
    assert got.variance == pytest.approx(want, rel=1e-12)
    assert (got.forward, got.k0) == (pytest.approx(forward, rel=1e-15), k0)


def test_white_paper_index_interpolates_to_thirty_days_in_minutes() -> None:
    near = greeks.expiry_variance(**_term(9), t=T1, r=R)
    nxt = greeks.expiry_variance(**_term(37), t=T2, r=R)
    n1, n2, n30, n365 = T1 * 525_600, T2 * 525_600, 43_200, 525_600
    want = 100 * math.sqrt((T1 * near.variance * (n2 - n30) / (n2 - n1)
                            + T2 * nxt.variance * (n30 - n1) / (n2 - n1)) * n365 / n30)
    got = greeks.vol_index(T1, near.variance, T2, nxt.variance)
    assert got == pytest.approx(want, rel=1e-14)
    assert 61.0 < got < 61.5  # the paper's example: a VIX of about 61


@pytest.mark.parametrize("sigma", [0.12, 0.2, 0.35])
def test_a_flat_volatility_chain_quoted_a_tick_either_side_gives_back_its_volatility(sigma: float) -> None:
    forward, t, r = 24_000.0, 30 / 365, 0.065
    strikes = np.arange(12_000.0, 40_001.0, 50.0)
    calls = greeks.black76_price(forward, strikes, t, r, sigma, True)
    puts = greeks.black76_price(forward, strikes, t, r, sigma, False)
    tick = 0.05
    got = greeks.expiry_variance(strikes, np.maximum(calls - tick, 0), calls + tick, np.maximum(puts - tick, 0),
                                 puts + tick, t, r)
    assert got.forward == pytest.approx(forward, abs=0.5)
    assert math.sqrt(got.variance) == pytest.approx(sigma, abs=0.002)


def test_two_consecutive_zero_bids_end_the_walk_and_a_single_zero_bid_is_skipped() -> None:
    strikes = np.arange(80.0, 121.0, 5.0)  # 80 .. 120, k0 = 100
    put_bid = np.array([1, 0, 0, 1, 1, 2, 3, 4, 5], float)  # 85 and 90 zero: 80 is never reached
    call_bid = np.array([5, 4, 3, 2, 1, 1, 0, 1, 1], float)  # 110 zero alone: skipped, 115 and 120 used
    got = greeks.expiry_variance(strikes, call_bid, call_bid + 0.5, put_bid, put_bid + 0.5, 0.1, 0.0, forward=100.0)
    assert got.k0 == 100.0 and got.strikes_used == 1 + 1 + 3  # put 95; k0; calls 105, 115, 120
    narrower = greeks.expiry_variance(strikes[3:], call_bid[3:], call_bid[3:] + 0.5, put_bid[3:], put_bid[3:] + 0.5,
                                      0.1, 0.0, forward=100.0)
    assert narrower.strikes_used == got.strikes_used  # 80 never counted: the walk had ended


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"strikes": [110.0, 100.0]}, "strictly ascending"),
    ({"strikes": [], "call_bid": [], "call_ask": [], "put_bid": [], "put_ask": []}, "non-empty"),
    ({"put_bid": [-1.0, 1.0]}, "non-negative"),
    ({"t": 0.0}, "t must be > 0"),
    ({"call_ask": [1.0]}, "equal lengths"),
    ({"call_bid": [3.0, 1.0], "call_ask": [2.0, 1.5]}, "ask below its bid"),
])
def test_bad_input_raises_value_error_with_the_reason(kwargs: dict, reason: str) -> None:
    args = {"strikes": [100.0, 110.0], "call_bid": [5.0, 1.0], "call_ask": [5.5, 1.5], "put_bid": [1.0, 5.0],
            "put_ask": [1.5, 5.5], "t": 0.1, "r": 0.05, **kwargs}
    with pytest.raises(ValueError, match=reason):
        greeks.expiry_variance(**args)


def test_vol_index_needs_the_near_expiry_first() -> None:
    with pytest.raises(ValueError, match="0 < t1 < t2"):
        greeks.vol_index(0.1, 0.04, 0.05, 0.04)
