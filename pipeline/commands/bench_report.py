"""The figures of a ``strikeflow bench`` run: counters in, rates, losses and a plain-language verdict out.

Pure: :class:`Totals` are counter readings taken by the run; a :class:`Phase` is
the measured window between two of them with the latencies collected inside
it. Conventions: rates are per wall second over the phase; latencies in
milliseconds; CPU in percent of one core; RSS in MB (peak = the kernel's
high-water mark of the process).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pipeline.runtime.percentiles import percentiles_ms
from pipeline.runtime.process_stats import ProcessSampler

SATURATED_CORE_PERCENT = 85.0  # a single-threaded process at this much of a core is at its limit
MACHINE_PERCENT = 100.0 * 2 * 0.85  # this machine's two cores, nearly all used


@dataclass
class Totals:
    """Cumulative counters at ``at`` (epoch seconds): ticks offered by the simulator, produced by the
    ingestor, processed by the workers, received by the bench's Redis subscriber, published by the workers,
    not published on purpose (conflated, stale, not newer), bars emitted, bar rows seen in the tables,
    ticks written to the ticks table, instruments subscribed."""

    at: float
    offered: float = 0.0
    ingested: float = 0.0
    processed: float = 0.0
    received: float = 0.0
    published: float = 0.0
    filtered: float = 0.0
    bars_emitted: float = 0.0
    bar_rows: float = 0.0
    ticks_written: float = 0.0
    subscribed: int = 0


@dataclass
class Phase:
    rate: float
    first: Totals
    last: Totals
    latency_ms: dict[str, float | None]
    bar_latencies_ms: np.ndarray
    lag_records: int
    cpu: dict[str, float | None] = field(default_factory=dict)


def phase_figures(phase: Phase) -> dict[str, Any]:
    a, b = phase.first, phase.last
    seconds = max(b.at - a.at, 1e-9)

    def rate(name: str) -> float:
        return round((getattr(b, name) - getattr(a, name)) / seconds, 1)

    return {
        "seconds": round(seconds, 1), "offered_tps": rate("offered"), "ingested_tps": rate("ingested"),
        "sustained_tps": rate("processed"), "published_tps": rate("received"), "bars_written_per_s": rate("bar_rows"),
        "ticks_written_per_s": rate("ticks_written"),
        "latency_ms": phase.latency_ms, "bar_latency_ms": percentiles_ms(phase.bar_latencies_ms),
        "lag_end_records": phase.lag_records, "lag_end_ticks": int(max(b.ingested - b.processed, 0)),
        "cpu_percent": {n: None if c is None else round(c, 1) for n, c in phase.cpu.items()},
    }


def kept_up(figures: Mapping[str, Any], p99_bound_ms: float | None = None) -> tuple[bool, str]:
    """Did the pipeline keep up in this phase? (ok, the reason when not)."""
    ingested, processed = figures["ingested_tps"], figures["sustained_tps"]
    if ingested < 0.9 * figures["offered_tps"]:
        return False, f"the ingestor took {ingested:,.0f} of {figures['offered_tps']:,.0f} ticks/s offered"
    if processed < 0.95 * ingested:
        return False, f"the workers processed {processed:,.0f} of {ingested:,.0f} ticks/s ingested"
    if figures["lag_end_ticks"] > max(ingested, 1000):
        return False, f"{figures['lag_end_ticks']:,} ticks behind at the end (more than a second of input)"
    p99 = figures["latency_ms"]["p99"]
    if p99_bound_ms is not None and (p99 is None or p99 > p99_bound_ms):
        return False, f"receive->Redis p99 {p99} ms over the {p99_bound_ms:.0f} ms bound"
    return True, ""


def bottleneck(cpu: Mapping[str, float | None]) -> str:
    """Where the time went: a process at its single core's limit, or the whole machine busy."""
    known = {n: c for n, c in cpu.items() if c is not None}
    if not known:
        return "no CPU figures"
    name, top = max(known.items(), key=lambda kv: kv[1])
    total = sum(known.values())
    parts = []
    if top >= SATURATED_CORE_PERCENT:
        parts.append(f"{name} at {top:.0f}% of a core (one Python thread: its ceiling)")
    if total >= MACHINE_PERCENT:
        parts.append(f"the machine's 2 cores nearly all used ({total:.0f}% in all)")
    if not parts:
        parts.append(f"no process saturated (busiest: {name} at {top:.0f}% of a core; {total:.0f}% in all)")
    return "; ".join(parts)


def report_of(args: argparse.Namespace, universe: Any, phases: list[Phase], drained: Totals, lost_bars: int,
              bars_checked: int, backwards: int, samplers: Mapping[str, ProcessSampler], soak_from: float,
              checked_against_ticks: tuple[int, int] | None) -> dict[str, Any]:
    """The JSON report: the (last kept-up, or only) phase's figures, losses after the drain, memory, verdict."""
    figures = [phase_figures(p) for p in phases]
    verdicts = [kept_up(f, args.p99_bound_ms if args.find_max else None) for f in figures]
    best = max((i for i, (ok, _) in enumerate(verdicts) if ok), default=len(phases) - 1)
    main = figures[best]
    lost_ticks = int(max(drained.ingested - drained.processed, 0)
                     + max(drained.processed - drained.received - drained.filtered, 0))
    report: dict[str, Any] = {
        "instruments": phases[best].last.subscribed, "universe": asdict(universe), "workers": args.workers,
        "store_ticks": args.store_ticks, "rate_requested": phases[best].rate, **main,
        "lost": {"ticks": lost_ticks, "bars": lost_bars},
        "ticks": {"ingested": int(drained.ingested), "processed": int(drained.processed),
                  "on_redis": int(drained.received), "not_published_on_purpose": int(drained.filtered),
                  "went_back_in_time": backwards},
        "bars_checked_in_db": bars_checked,
        "rss_mb": {n: round(s.peak_rss_mb, 1) for n, s in samplers.items()},
    }
    if checked_against_ticks is not None:
        report["bars_1m_vs_raw_ticks"] = {"checked": checked_against_ticks[0], "differ": checked_against_ticks[1]}
    if args.find_max:
        report["steps"] = [{"rate": round(p.rate), "kept_up": ok, "why": why, "sustained_tps": f["sustained_tps"],
                            "latency_ms": f["latency_ms"]} for p, f, (ok, why) in zip(phases, figures, verdicts)]
        report["max_sustained_tps"] = main["sustained_tps"] if verdicts[best][0] else None
    if args.soak:
        report["rss_slope_mb_per_min"] = {n: None if (v := s.rss_slope_mb_per_min(soak_from)) is None else round(v, 3)
                                          for n, s in samplers.items()}
    report["verdict"] = verdict_text(main, verdicts[best], lost_ticks, lost_bars)
    return report


def verdict_text(figures: Mapping[str, Any], verdict: tuple[bool, str], lost_ticks: int, lost_bars: int) -> str:
    ok, why = verdict
    lat = figures["latency_ms"]
    head = (f"kept up: {figures['sustained_tps']:,.0f} ticks/s processed of {figures['offered_tps']:,.0f} offered"
            if ok else f"did not keep up: {why}")
    lost = "nothing lost" if not (lost_ticks or lost_bars) else f"LOST {lost_ticks:,} ticks and {lost_bars:,} bars"
    return (f"{head}; receive->Redis p50 {lat['p50']} ms, p99 {lat['p99']} ms; {lost}; "
            f"bottleneck: {bottleneck(figures['cpu_percent'])}")
