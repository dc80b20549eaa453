"""Throughput of BarAggregator.add_ticks vs the per-tick reference implementation.

Run: ``.venv/bin/python benchmarks/bench_bars.py [--ticks N]``. A synthetic
receive-ordered stream over ~200 instruments (about one tick per instrument
per event second, 0.5 % redeliveries, optionally 1 % stragglers 3-120 s
late) is cut into batches of 100 and 1000 ticks and fed to one aggregator per
interval (60/300/900 s, as the process agent runs three), then to the three
together (what the agent pays per batch).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from pipeline.core.bars.aggregator import BarAggregator
from pipeline.records.ticks import GREEK_FIELDS, PRICED_TICK_DTYPE

T0915 = 1_767_584_700  # 2026-01-05 09:15 IST


def _reference_class():
    spec = importlib.util.spec_from_file_location("_bars_reference", ROOT / "tests" / "pipeline" / "core" / "test_bars.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Reference


def make_stream(n: int, n_instruments: int = 200, late_fraction: float = 0.0, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tokens = rng.choice(np.arange(10_000, 2_000_000), n_instruments, replace=False).astype(np.uint32)
    t = np.zeros(n, PRICED_TICK_DTYPE)
    inst = rng.integers(0, n_instruments, n)
    t["instrument_token"] = tokens[inst]
    t["mode"] = 3
    t["exchange_ts"] = T0915 + np.arange(n) // n_instruments  # ~1 tick per instrument per second
    late = rng.random(n) < late_fraction
    t["exchange_ts"][late] -= rng.integers(3, 120, int(late.sum()))
    t["recv_ts"] = T0915 * 1_000_000 + np.arange(n) * 5 + 1
    t["last_price"] = np.round(100 + np.cumsum(rng.normal(0, 0.05, n)), 2)
    t["volume"] = np.cumsum(rng.integers(0, 50, n))  # increasing per instrument as well
    t["oi"] = rng.integers(10_000, 20_000, n)
    t["bid"] = t["last_price"] - 0.05
    t["ask"] = t["last_price"] + 0.05
    for j, g in enumerate(GREEK_FIELDS):
        t[g] = 0.1 * j
    redeliver = np.flatnonzero(rng.random(n) < 0.005)  # at-least-once: a tick seen twice
    order = np.sort(np.concatenate([np.arange(n), redeliver]))
    return t[order]


def time_aggregators(stream: np.ndarray, intervals: tuple[int, ...], batch: int, repeat: int = 3) -> float:
    batches = [stream[i : i + batch] for i in range(0, len(stream), batch)]
    best = float("inf")
    for _ in range(repeat):
        emitted = []
        aggs = [BarAggregator(iv, emitted.append, grace_s=2.0, late_window_s=900.0) for iv in intervals]
        start = time.perf_counter()
        for b in batches:
            for agg in aggs:
                agg.add_ticks(b)
        best = min(best, time.perf_counter() - start)
    return len(stream) / best


def time_reference(stream: np.ndarray, interval: int, batch: int) -> float:
    reference = _reference_class()(interval, 2.0, 900.0)
    start = time.perf_counter()
    for i in range(0, len(stream), batch):
        reference.add(stream[i : i + batch])
    reference.bars()  # bars computed once at the end: a lower bound of its cost
    return len(stream) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=400_000)
    parser.add_argument("--reference-ticks", type=int, default=50_000)
    args = parser.parse_args()
    print(f"numpy {np.__version__}, python {sys.version.split()[0]}")
    for late_fraction in (0.0, 0.01):
        stream = make_stream(args.ticks, late_fraction=late_fraction)
        ref_stream = stream[: args.reference_ticks]
        print(
            f"\nstream: {len(stream)} ticks, 200 instruments, {int(stream['exchange_ts'].max() - T0915)} event-seconds, "
            f"0.5% redeliveries, {late_fraction:.0%} late ticks (3-120 s)"
        )
        print(f"{'interval':>10} {'batch':>6} {'add_ticks ticks/s':>18} {'reference ticks/s':>18} {'ratio':>8}")
        for interval in (60, 300, 900):
            ref_rate = time_reference(ref_stream, interval, 100)
            for batch in (100, 1000):
                rate = time_aggregators(stream, (interval,), batch)
                print(f"{interval:>10} {batch:>6} {rate:>18,.0f} {ref_rate:>18,.0f} {rate / ref_rate:>7.0f}x")
        for batch in (100, 1000):
            rate = time_aggregators(stream, (60, 300, 900), batch)
            print(f"{'60+300+900':>10} {batch:>6} {rate:>18,.0f} {'':>18} {'':>8}  (three aggregators, same batches)")


if __name__ == "__main__":
    main()
