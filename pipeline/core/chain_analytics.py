"""Per-bucket chain analytics of the OI rollups: gamma exposure, OI build-up, 25-delta skew (pure numpy).

Definitions (docs/design.md "Definitions"):

- ATM strike: the listed strike nearest the forward; ATM IV: interpolated at the forward between the two
  listed strikes bracketing it, from the out-of-the-money sides (``atm_iv``).

- GEX is one function of the forward level X over one set of options: every listed strike's option with
  a known current OI and a last usable IV (its newest bar's mid IV, else its IV), each with its Black-76
  gamma (undiscounted: the exposure to a move of the forward) re-evaluated at X with that IV:
  ``total(X) = sum(+call OI x gamma_c(X) - put OI x gamma_p(X)) x X^2 x 0.01`` (rupees of delta change per
  1 % move, dealers long calls and short puts, the common convention; OI in units as Kite reports it).
  ``call_gex``/``put_gex`` are each option's term at the bucket's forward F; ``gex = total(F)``; NaN (NULL),
  never 0, when F is unknown or no option has both OI and an IV. Why re-evaluate: the bars' gammas are
  of their own closes, some at an old forward; one forward makes the total and its flip agree.
- ``gex_flip``: a root of exactly ``total``: evaluated at every listed strike, interpolated linearly
  between the two strikes around the sign change nearest F; NaN when it never changes sign.
- Build-up per strike and side against the option's previous bar: price up and OI up 'long_buildup',
  price down and OI up 'short_buildup', price up and OI down 'short_covering', price down and OI down
  'long_unwinding'; none when either change is zero or there is no previous bar.
- rr25 = IV(25-delta call) - IV(25-delta put), bf25 = their mean - ATM IV, each IV interpolated linearly
  in forward delta among the expiry's fresh options (NaN when 0.25 / -0.25 is outside their deltas).
"""

from __future__ import annotations

import numpy as np

import greeks
from pipeline.records.kinds import InstrumentKind
from pipeline.records.rollups import MISSING_INT

BUILDUPS = ("", "long_buildup", "short_buildup", "short_covering", "long_unwinding")


def atm_strike(strikes: np.ndarray, forward: float) -> float:
    """The strike of ``strikes`` (ascending) nearest ``forward`` (ties: the lower); NaN without either."""
    if len(strikes) == 0 or not np.isfinite(forward):
        return float("nan")
    return float(strikes[int(np.argmin(np.abs(strikes - forward)))])  # first minimum: the lower on ties


def atm_iv(strikes: np.ndarray, forward: float, call_iv: np.ndarray, put_iv: np.ndarray) -> float:
    """IV at the forward (docs/design.md "ATM IV"), from out-of-the-money sides: between the listed strikes
    ``K_lo < F < K_hi`` bracketing it, linear in strike from the put's IV at ``K_lo`` to the call's at
    ``K_hi``; when only one of the two is known, that one; at ``F`` equal to a listed strike, the mean of
    the call and put known there. NaN when F is outside the listed strikes or nothing usable is known.
    ``call_iv``/``put_iv`` are aligned with ``strikes`` (ascending), NaN where a side may not be used
    (missing, stale): the caller decides freshness."""
    if len(strikes) == 0 or not np.isfinite(forward):
        return float("nan")
    hi = int(np.searchsorted(strikes, forward))
    if hi < len(strikes) and strikes[hi] == forward:
        known = np.array([call_iv[hi], put_iv[hi]])
        known = known[~np.isnan(known)]
        return float(known.mean()) if len(known) else float("nan")
    if hi == 0 or hi == len(strikes):
        return float("nan")
    lo = hi - 1
    below, above = float(put_iv[lo]), float(call_iv[hi])
    if np.isnan(below) or np.isnan(above):
        return above if np.isnan(below) else below  # NaN when both are
    w = (forward - strikes[lo]) / (strikes[hi] - strikes[lo])
    return below + w * (above - below)


def gamma_exposure(oi: np.ndarray, gamma: np.ndarray, forward: float, is_call: bool) -> np.ndarray:
    """Per strike: +/- OI x gamma x F^2 x 0.01 (calls +, puts -); NaN where OI or gamma is unknown."""
    sign = 1.0 if is_call else -1.0
    return sign * np.asarray(oi, np.float64) * np.asarray(gamma, np.float64) * forward * forward * 0.01


def gex_terms(level: float | np.ndarray, strikes: np.ndarray, t: float, oi: np.ndarray, iv: np.ndarray,
              is_call: bool) -> np.ndarray:
    """Each option's term of ``total`` (module docstring) at forward ``level``: +/- OI x gamma(level) x
    level^2 x 0.01 (``level`` a scalar or a column of levels, broadcast against the strikes); NaN where its OI
    or IV is unknown."""
    oi = np.asarray(oi, np.float64)
    gamma = greeks.black76_greeks(level, strikes, t, 0.0, iv, is_call).gamma
    return gamma_exposure(oi, gamma, level, is_call)


def _totals(levels: np.ndarray, strikes: np.ndarray, t: float, call_oi: np.ndarray, put_oi: np.ndarray,
            call_iv: np.ndarray, put_iv: np.ndarray) -> np.ndarray:
    """``total`` at every forward level of ``levels`` at once (one vectorised pass, rows = levels); NaN where
    no option has both OI and an IV."""
    x, k = np.asarray(levels, np.float64)[:, None], np.asarray(strikes, np.float64)[None, :]
    terms = np.concatenate([gex_terms(x, k, t, call_oi, call_iv, True), gex_terms(x, k, t, put_oi, put_iv, False)],
                           axis=1)
    return np.where(np.isfinite(terms).any(axis=1), np.nansum(terms, axis=1), np.nan)


def gex_total(level: float, strikes: np.ndarray, t: float, call_oi: np.ndarray, put_oi: np.ndarray,
              call_iv: np.ndarray, put_iv: np.ndarray) -> float:
    """``total(level)`` (module docstring); NaN when no option has both OI and an IV, or t <= 0."""
    if not np.isfinite(level) or not t > 0:
        return float("nan")
    return float(_totals(np.array([level]), strikes, t, call_oi, put_oi, call_iv, put_iv)[0])


def gex_flip(strikes: np.ndarray, forward: float, t: float, call_oi: np.ndarray, put_oi: np.ndarray,
             call_iv: np.ndarray, put_iv: np.ndarray) -> float:
    """The forward level where ``total`` changes sign (module docstring); NaN when it does not or when the
    inputs say nothing (no forward, t <= 0, fewer than two strikes)."""
    if len(strikes) < 2 or not np.isfinite(forward) or not t > 0:
        return float("nan")
    totals = _totals(strikes, strikes, t, call_oi, put_oi, call_iv, put_iv)  # the forward at each listed strike
    if not np.isfinite(totals).all():
        return float("nan")
    sign = np.sign(totals)
    cross = np.flatnonzero((sign[:-1] * sign[1:] < 0))
    if cross.size == 0:
        return float("nan")
    i = cross[int(np.argmin(np.abs((strikes[cross] + strikes[cross + 1]) / 2 - forward)))]
    w = totals[i] / (totals[i] - totals[i + 1])
    return float(strikes[i] + w * (strikes[i + 1] - strikes[i]))


def buildup(price_change: np.ndarray, oi_change: np.ndarray) -> np.ndarray:
    """Codes into ``BUILDUPS`` (0 = none) per option from its close and OI change against its previous bar."""
    dp, doi = np.asarray(price_change, np.float64), np.asarray(oi_change, np.float64)
    out = np.zeros(len(dp), np.int64)
    out[(dp > 0) & (doi > 0)] = 1
    out[(dp < 0) & (doi > 0)] = 2
    out[(dp > 0) & (doi < 0)] = 3
    out[(dp < 0) & (doi < 0)] = 4
    return out


def wing_ivs(call_delta: np.ndarray, call_iv: np.ndarray, put_delta: np.ndarray, put_iv: np.ndarray
             ) -> tuple[float, float]:
    """(IV of the 25-delta call, IV of the -25-delta put), each interpolated linearly in delta among the
    given options (NaN entries ignored); NaN when the target delta is outside those deltas."""
    out = []
    for delta, iv, target in ((call_delta, call_iv, 0.25), (put_delta, put_iv, -0.25)):
        ok = np.isfinite(delta) & np.isfinite(iv)
        d, v = np.asarray(delta)[ok], np.asarray(iv)[ok]
        if d.size == 0 or not d.min() <= target <= d.max():
            out.append(float("nan"))
            continue
        order = np.argsort(d, kind="stable")
        out.append(float(np.interp(target, d[order], v[order])))
    return out[0], out[1]


def fresh_ivs(cur: np.ndarray, traded: np.ndarray, inv: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(call, put) IVs per strike that the ATM interpolation may use: sides fresh in the bucket (ticked in it,
    not stale at their close), each its ``mid_iv`` where it has one, else its ``iv``; NaN elsewhere."""
    out = []
    for kind in (InstrumentKind.CALL, InstrumentKind.PUT):
        m = (cur["kind"] == kind) & traded & (cur["stale"] == 0)
        side = np.full(n, np.nan)
        side[inv[m]] = np.where(np.isfinite(cur["mid_iv"][m]), cur["mid_iv"][m], cur["iv"][m])
        out.append(side)
    return out[0], out[1]


def chain_analytics(rows: np.ndarray, chain: np.ndarray, cur: np.ndarray,
                     previous: tuple[np.ndarray, np.ndarray, np.ndarray], inv: np.ndarray,
                     fresh_ivs: tuple[np.ndarray, np.ndarray], t: float) -> None:
    """GEX, build-up and 25-delta skew of one (expiry, bucket) into its strike rows and chain row
    (the functions above). ``previous``: (has a bar in the bucket and one before, the close
    and OI of that previous bar) per option; ``fresh_ivs``: :func:`fresh_ivs` per strike; ``t``: years
    from the bucket to expiry."""
    forward = float(chain["forward"][0])
    compared, prev_close, prev_oi = previous
    codes = buildup(np.where(compared, cur["close"] - prev_close, 0), np.where(compared, cur["oi"] - prev_oi, 0))
    oi, usable = {}, {}
    for side, kind in (("call", InstrumentKind.CALL), ("put", InstrumentKind.PUT)):
        m = cur["kind"] == kind
        usable[side] = np.full(len(rows), np.nan)  # the option's last usable IV: its newest bar's mid IV, else IV
        usable[side][inv[m]] = np.where(np.isfinite(cur["mid_iv"][m]), cur["mid_iv"][m], cur["iv"][m])
        oi[side] = np.where(rows[f"{side}_oi"] == MISSING_INT, np.nan, rows[f"{side}_oi"]).astype(np.float64)
        rows[f"{side}_gex"] = (gex_terms(forward, rows["strike"], t, oi[side], usable[side], kind == InstrumentKind.CALL)
                               if np.isfinite(forward) and t > 0 else np.nan)
        labels = np.full(len(rows), b"", dtype=rows.dtype[f"{side}_buildup"])
        labels[inv[m]] = np.array([BUILDUPS[c].encode() for c in codes[m].tolist()], dtype=labels.dtype)
        rows[f"{side}_buildup"] = labels
    call_iv, put_iv = fresh_ivs
    gex = (rows["strike"], t, oi["call"], oi["put"], usable["call"], usable["put"])
    chain["gex"] = gex_total(forward, *gex)
    chain["gex_flip"] = gex_flip(rows["strike"], forward, t, *gex[2:])
    # the wings from the same fresh sides (a NaN IV leaves its strike out)
    c25, p25 = wing_ivs(rows["call_delta"], call_iv, rows["put_delta"], put_iv)
    chain["rr25"] = c25 - p25
    chain["bf25"] = (c25 + p25) / 2 - float(chain["atm_iv"][0])
