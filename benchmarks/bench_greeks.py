"""Benchmark: implied vol + all Greeks, strikeflow engine vs QuantLib and vollib loops.

Run:  python benchmarks/bench_greeks.py [--json] [--sizes 100,1000,1000000]

Single core (thread env vars set to 1 before numpy is imported). Inputs are
identical for every engine: NIFTY/BANKNIFTY-like forwards, strikes within
+-15 % of the forward, 1 hour to 90 days to expiry, vols 8-60 %, calls and
puts, r = 7 %, prices from Black-76 rounded to the 0.05 tick (rows below one
tick are floored to 0.05).

* ours: greeks.implied_vol then greeks.black76_greeks on the whole batch.
  Small batches are repeated and the median time is used.
* QuantLib: Python loop, per option ql.blackFormulaImpliedStdDev (accuracy
  1e-12) then ql.BlackCalculator (value, deltaForward, gammaForward,
  thetaPerDay-equivalent, vega, rho). Timed on a subsample for large batches
  and extrapolated linearly (stated in the output).
* vollib: Python loop, per option vollib implied_volatility then the five
  analytical Greeks; subsample + extrapolation likewise.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import json
import math
import statistics
import time

import numpy as np

import greeks

R = 0.07


def make_inputs(n: int, seed: int = 42):
    rng = np.random.default_rng(seed)
    f = np.where(rng.random(n) < 0.5, rng.uniform(21000, 26000, n), rng.uniform(44000, 56000, n))
    k = np.round(f * np.exp(rng.uniform(-0.15, 0.15, n)) / 50.0) * 50.0
    t = np.exp(rng.uniform(math.log(1 / (365 * 24)), math.log(90 / 365), n))
    vol = rng.uniform(0.08, 0.6, n)
    call = rng.random(n) < 0.5
    price = greeks.black76_price(f, k, t, R, vol, call)
    price = np.maximum(np.round(price / 0.05) * 0.05, 0.05)
    return price, f, k, t, call


def run_ours(price, f, k, t, call):
    iv = greeks.implied_vol(price, f, k, t, R, call)
    return greeks.black76_greeks(f, k, t, R, iv, call)


def time_ours(inputs, n: int) -> tuple[float, float]:
    """Seconds per batch of n: (median, best) over repeats (~2M options of work for small n)."""
    run_ours(*inputs)  # warm-up (JIT cache load)
    reps = max(5, min(2000, int(2_000_000 / max(n, 1))))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run_ours(*inputs)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def quantlib_loop(price, f, k, t, call):
    import QuantLib as ql

    out = []
    for p, ff, kk, tt, c in zip(price.tolist(), f.tolist(), k.tolist(), t.tolist(), call.tolist()):
        typ = ql.Option.Call if c else ql.Option.Put
        df = math.exp(-R * tt)
        try:
            std = ql.blackFormulaImpliedStdDev(typ, kk, ff, p, df, 0.0, ql.nullDouble(), 1e-12, 100)
        except RuntimeError:
            out.append(None)
            continue
        bc = ql.BlackCalculator(ql.PlainVanillaPayoff(typ, kk), ff, std, df)
        vol = std / math.sqrt(tt)
        v = bc.value()
        out.append((v, bc.deltaForward(), bc.gammaForward(), bc.theta(ff, tt) / 365.0,
                    bc.vega(tt) * 0.01, -tt * v * 0.01, vol))
    return out


def vollib_loop(price, f, k, t, call):
    from vollib.black.greeks import analytical as a
    from vollib.black.implied_volatility import implied_volatility

    out = []
    for p, ff, kk, tt, c in zip(price.tolist(), f.tolist(), k.tolist(), t.tolist(), call.tolist()):
        fl = "c" if c else "p"
        try:
            s = implied_volatility(p, ff, kk, R, tt, fl)
        except Exception:  # noqa: BLE001
            out.append(None)
            continue
        out.append((s, a.delta(fl, ff, kk, tt, R, s), a.gamma(fl, ff, kk, tt, R, s),
                    a.theta(fl, ff, kk, tt, R, s), a.vega(fl, ff, kk, tt, R, s),
                    a.rho(fl, ff, kk, tt, R, s)))
    return out


def time_loop(fn, inputs, n: int, cap: int):
    """Seconds for n options; loops over at most `cap` rows and extrapolates."""
    m = min(n, cap)
    sub = tuple(a[:m] for a in inputs)
    fn(*(a[: min(m, 20)] for a in inputs))  # warm-up imports
    reps = max(1, int(2000 / m))
    best = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(*sub)
        best.append(time.perf_counter() - t0)
    return statistics.median(best) * n / m, m < n, m


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--sizes", default="100,1000,1000000")
    ap.add_argument("--loop-cap", type=int, default=5000, help="max rows timed for the Python loops")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    rows = []
    for n in sizes:
        inputs = make_inputs(n)
        ours, ours_best = time_ours(inputs, n)
        ql_t, ql_extra, ql_m = time_loop(quantlib_loop, inputs, n, args.loop_cap)
        vl_t, vl_extra, vl_m = time_loop(vollib_loop, inputs, n, args.loop_cap)
        iv = greeks.implied_vol(*inputs[:4], R, inputs[4])
        rows.append({
            "n": n,
            "ours_ops": n / ours,
            "ours_best_ops": n / ours_best,
            "quantlib_ops": n / ql_t,
            "vollib_ops": n / vl_t,
            "ours_over_quantlib": ql_t / ours,
            "ours_over_vollib": vl_t / ours,
            "quantlib_extrapolated_from": ql_m if ql_extra else None,
            "vollib_extrapolated_from": vl_m if vl_extra else None,
            "nan_iv_rows": int(np.isnan(iv).sum()),
        })

    if args.json:
        print(json.dumps({"benchmark": "iv+greeks", "single_core": True, "results": rows}))
        return 0
    print("IV + all Greeks, single core, options/second (higher is better)")
    hdr = f"{'batch':>10} {'ours (median)':>14} {'ours (best)':>12} {'QuantLib loop':>14} {'vollib loop':>14} {'ours/QL':>9} {'ours/vollib':>12}  note"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        notes = []
        if r["quantlib_extrapolated_from"]:
            notes.append(f"QL timed on {r['quantlib_extrapolated_from']} rows, extrapolated")
        if r["vollib_extrapolated_from"]:
            notes.append(f"vollib timed on {r['vollib_extrapolated_from']} rows, extrapolated")
        print(f"{r['n']:>10,} {r['ours_ops']:>14,.0f} {r['ours_best_ops']:>12,.0f} {r['quantlib_ops']:>14,.0f} {r['vollib_ops']:>14,.0f} "
              f"{r['ours_over_quantlib']:>8.1f}x {r['ours_over_vollib']:>11.1f}x  {'; '.join(notes)}")
    print("ours: implied_vol + black76_greeks on the whole batch, median (and best) over repeated calls;")
    print("ratios use the median. Loops: median over repeats; the 1,000,000 row is extrapolated as noted.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
