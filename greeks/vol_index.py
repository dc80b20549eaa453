"""Model-free volatility index: the Cboe VIX method, which NSE's India VIX follows (pure numpy).

Per expiry, :func:`expiry_variance` (Cboe's white paper, "The VIX calculation step-by-step"):

- mids: the average of bid and ask of each call and put;
- forward: put-call parity at the strike where |call mid - put mid| is smallest among strikes whose
  call and put both have a bid, ``F = K + e^{rT} (C - P)``, unless ``forward`` is given (India VIX
  uses the near future's price);
- ``k0``: the largest listed strike at or below F;
- out-of-the-money puts below ``k0`` and calls above it, walking outward from ``k0``: a strike with a
  zero bid is skipped, and after two consecutive zero bids no further strike is used; ``k0`` itself at
  the average of its call and put mids;
- ΔK: half the distance between a used strike's neighbours among the used strikes (one-sided at the ends);
- variance = (2/T) Σ ΔK/K² e^{rT} Q(K) - (1/T) (F/k0 - 1)².

:func:`vol_index` interpolates two expiries' variances to ``target_days`` calendar days in minutes and
returns volatility points. ``t`` in years, ``r`` continuously compounded per year, prices as quoted.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

MINUTES_PER_YEAR = 525_600.0
MINUTES_PER_DAY = 1_440.0


class ExpiryVariance(NamedTuple):
    """One expiry's model-free variance (annualised), the forward and ``k0`` used, and how many strikes
    entered the sum."""

    variance: float
    forward: float
    k0: float
    strikes_used: int
    puts_used: int = 0  # out-of-the-money puts below k0 with a non-zero bid in the sum
    calls_used: int = 0  # out-of-the-money calls above k0 with a non-zero bid in the sum
    truncated: bool = False  # a walk ran out of listed strikes before two consecutive zero bids ended it


def _arrays(strikes: ArrayLike, *quotes: ArrayLike) -> tuple[np.ndarray, ...]:
    k = np.asarray(strikes, dtype=np.float64)
    out = [np.asarray(q, dtype=np.float64) for q in quotes]
    if k.ndim != 1 or k.size == 0:
        raise ValueError("strikes must be a non-empty 1-d array")
    if any(q.shape != k.shape for q in out):
        raise ValueError("strikes, call_bid, call_ask, put_bid and put_ask must have equal lengths")
    if not np.all(np.isfinite(k)) or np.any(k <= 0) or np.any(np.diff(k) <= 0):
        raise ValueError("strikes must be positive, finite and strictly ascending")
    for q in out:
        if not np.all(np.isfinite(q)) or np.any(q < 0):
            raise ValueError("bids and asks must be finite and non-negative")
    return (k, *out)


def _walk(bids: np.ndarray, order: np.ndarray) -> tuple[list[int], bool]:
    """Strikes used walking outward in ``order``: zero bids skipped, stop after two in a row; and whether the
    strikes ran out first (the chain listed or subscribed is narrower than the market's)."""
    used, zeros = [], 0
    for i in order.tolist():
        if bids[i] > 0:
            used.append(i)
            zeros = 0
        else:
            zeros += 1
            if zeros == 2:
                return used, False
    return used, True


def expiry_variance(strikes: ArrayLike, call_bid: ArrayLike, call_ask: ArrayLike, put_bid: ArrayLike,
                    put_ask: ArrayLike, t: float, r: float, forward: float | None = None) -> ExpiryVariance:
    """The model-free variance of one expiry (module docstring); ValueError on bad input, saying why."""
    k, cb, ca, pb, pa = _arrays(strikes, call_bid, call_ask, put_bid, put_ask)
    if not (np.isfinite(t) and t > 0):
        raise ValueError(f"t must be > 0 years, got {t!r}")
    if np.any(ca < cb) or np.any(pa < pb):
        raise ValueError("an ask below its bid")
    growth = float(np.exp(r * t))
    call_mid, put_mid = (cb + ca) / 2, (pb + pa) / 2
    if forward is None:
        both = np.flatnonzero((cb > 0) & (pb > 0))
        if both.size == 0:
            raise ValueError("no strike has both a call and a put bid: no parity forward")
        j = both[int(np.argmin(np.abs(call_mid[both] - put_mid[both])))]
        forward = float(k[j] + growth * (call_mid[j] - put_mid[j]))
    elif not (np.isfinite(forward) and forward > 0):
        raise ValueError(f"forward must be > 0, got {forward!r}")
    below = np.flatnonzero(k <= forward)
    if below.size == 0:
        raise ValueError(f"every strike is above the forward {forward}: no k0")
    i0 = int(below[-1])
    puts, puts_out = _walk(pb, np.arange(i0 - 1, -1, -1))
    calls, calls_out = _walk(cb, np.arange(i0 + 1, len(k)))
    used = np.array(sorted([*puts, i0, *calls]))
    q = np.where(k[used] < k[i0], put_mid[used], np.where(k[used] > k[i0], call_mid[used], 0.0))
    q[used == i0] = (call_mid[i0] + put_mid[i0]) / 2
    ku = k[used]
    dk = np.empty(len(ku))
    if len(ku) == 1:
        dk[:] = 0.0
    else:
        dk[1:-1] = (ku[2:] - ku[:-2]) / 2
        dk[0], dk[-1] = ku[1] - ku[0], ku[-1] - ku[-2]
    variance = 2 / t * float(np.sum(dk / ku**2 * growth * q)) - (forward / k[i0] - 1) ** 2 / t
    return ExpiryVariance(variance, float(forward), float(k[i0]), len(used), len(puts), len(calls),
                          puts_out or calls_out)


def vol_index(t1: float, var1: float, t2: float, var2: float, target_days: float = 30) -> float:
    """The index in volatility points: the two expiries' variances interpolated to ``target_days``
    calendar days in minutes, ``100 sqrt([T1 σ1² (N_T2 - N_t)/(N_T2 - N_T1) + T2 σ2² (N_t - N_T1)/(N_T2 - N_T1)]
    N_365/N_t)``; ``t1 < t2`` in years. ValueError on bad input."""
    if not (0 < t1 < t2) or target_days <= 0:
        raise ValueError(f"need 0 < t1 < t2 and target_days > 0, got t1={t1!r}, t2={t2!r}, target_days={target_days!r}")
    n1, n2, nt = t1 * MINUTES_PER_YEAR, t2 * MINUTES_PER_YEAR, target_days * MINUTES_PER_DAY
    blended = t1 * var1 * (n2 - nt) / (n2 - n1) + t2 * var2 * (nt - n1) / (n2 - n1)
    value = blended * MINUTES_PER_YEAR / nt
    if value < 0:
        raise ValueError(f"the interpolated variance is negative ({value}): the inputs are not variances")
    return 100.0 * float(np.sqrt(value))
