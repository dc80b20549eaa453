"""Backfill: fill gaps in the 1-minute bars from Kite's historical candles, and derive what they change.

Routes candles through the core (``pipeline.core.backfill``) into the bar tables; the live pipeline's
bars always win:

1. Gaps: per instrument of the chosen underlyings, the minutes of continuous trading (NSE calendar,
   ``pipeline.records.exchange_calendar``) in the range with no stored 1-minute bar and not already answered
   by Kite (the ledger ``backfill_checked``: a minute without a trade has no candle, and is not asked for
   again). An instrument with none is not requested at all.
2. Candles: one request per instrument (and per 60 days) over the span of its gaps, spaced within
   Kite's 3 requests/s (``pipeline.feed.kite_history``); only candles of gap minutes are kept (a
   minute without a trade has no candle, and no bar, as live). The spans answered are recorded in the
   ledger, up to the minutes that ended ``CANDLE_SETTLE_S`` before the requests.
3. Bars: 1-minute bars from the candles, priced at each close against the same minute's forward; the
   stored bars of the same minutes take part in the forward (a future or the parity pairs that did
   trade live). Written with ``source = 'historical'`` where no bar exists (never over a live one).
4. 5- and 15-minute bars of every coarse bucket a backfilled minute falls in, combined from all its
   1-minute bars (live and historical), inserted where the live pipeline wrote none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.core.backfill import (
    MINUTE_S,
    candle_bars,
    coarse_bars,
    gap_minutes,
    price_minute_bars,
    settled_spans,
)
from pipeline.core.pricing import PricingRules
from pipeline.feed.kite_history import HistoricalCandles
from pipeline.records.bars import BAR_DTYPE, CANDLE_DTYPE
from pipeline.records.exchange_calendar import session_minutes
from pipeline.records.instruments import InstrumentIndex
from pipeline.runtime.settings import Settings
from sinks.backfill_ledger import load_checked, record_checked
from sinks.bar_history import load_bars_between
from sinks.result_writer import Results, ResultWriter

COARSE_INTERVALS_S = (300, 900)


@dataclass
class BackfillReport:
    """What a backfill did: instruments with gaps, requests, candles kept, bars written per interval."""

    instruments: int = 0
    with_gaps: int = 0
    gap_minutes: int = 0
    requests: int = 0
    candles: int = 0
    no_trade_minutes: int = 0
    written: dict[int, int] = field(default_factory=dict)

    def line(self) -> str:
        bars = ", ".join(f"{n:,} bars_{i // 60}m" for i, n in sorted(self.written.items()))
        return (f"{self.with_gaps:,} of {self.instruments:,} instruments had {self.gap_minutes:,} gap minutes; "
                f"{self.requests:,} requests, {self.candles:,} candles, {self.no_trade_minutes:,} minutes without "
                f"trades (recorded: not asked again); wrote {bars or 'nothing'}")


async def _fetch(client: HistoricalCandles, gaps: dict[int, np.ndarray], report: BackfillReport,
                 on_progress: Callable[[str], None]) -> np.ndarray:
    """The candles of every gap minute, one instrument at a time (the client keeps the rate limit)."""
    parts = []
    for done, (token, missing) in enumerate(gaps.items(), 1):
        candles = await asyncio.to_thread(client.minute_candles, token, int(missing[0]), int(missing[-1]) + MINUTE_S)
        parts.append(candles[np.isin(candles["bucket"], missing)])
        report.requests = client.requests
        on_progress(f"backfill: {done}/{len(gaps)} instruments fetched, {sum(map(len, parts)):,} candles")
    return np.concatenate(parts) if parts else np.empty(0, CANDLE_DTYPE)


async def backfill(pool: Any, schema: str, index: InstrumentIndex, tokens: np.ndarray, client: HistoricalCandles,
                   settings: Settings, since: float, until: float, fetched_us: int,
                   on_progress: Callable[[str], None] = lambda _: None) -> BackfillReport:
    """Fill the gaps of ``tokens`` in [since, until) (epoch s) into ``schema``; the report of what it did."""
    report = BackfillReport(instruments=len(tokens))
    minutes = np.array(session_minutes(since, until), dtype=np.int64)
    if not len(minutes) or not len(tokens):
        return report
    first, end = int(minutes[0]), int(minutes[-1]) + MINUTE_S
    stored = await load_bars_between(pool, schema, MINUTE_S, tokens, first, end)
    gaps = gap_minutes(tokens, minutes, stored, await load_checked(pool, schema, tokens, first, end))
    report.with_gaps, report.gap_minutes = len(gaps), sum(len(m) for m in gaps.values())
    candles = await _fetch(client, gaps, report, on_progress)
    report.candles = len(candles)
    settled = settled_spans(gaps, fetched_us / 1e6)
    report.no_trade_minutes = _no_trade_minutes(gaps, candles, settled)
    await record_checked(pool, schema, settled)
    if not len(candles):
        return report
    bars = candle_bars(candles, fetched_us)
    context = stored[np.isin(stored["bucket"], bars["bucket"])]  # live closes of the same minutes
    bars = price_minute_bars(np.concatenate([bars, context]), index, settings.risk_free_rate,
                             PricingRules.from_settings(settings))[:len(bars)]
    writer = ResultWriter(pool, schema, source="historical")
    report.written[MINUTE_S] = sum((await writer.write(Results(bars=bars))).values())
    for interval in COARSE_INTERVALS_S:
        report.written[interval] = await _write_coarse(pool, writer, schema, bars, interval)
    return report


def _no_trade_minutes(asked: dict[int, np.ndarray], candles: np.ndarray, settled: np.ndarray) -> int:
    """Asked minutes inside a settled span that Kite answered with no candle."""
    count = 0
    for token, since, until in settled.tolist():
        minutes = asked[token]
        minutes = minutes[(minutes >= since) & (minutes < until)]
        count += len(np.setdiff1d(minutes, candles["bucket"][candles["instrument_token"] == token]))
    return count


async def _write_coarse(pool: Any, writer: ResultWriter, schema: str, filled: np.ndarray, interval: int) -> int:
    """Combine and insert the ``interval`` bars of the coarse buckets the ``filled`` minutes fall in."""
    buckets = np.unique(filled["bucket"] // interval * interval)
    tokens = np.unique(filled["instrument_token"])
    minute_bars = await load_bars_between(pool, schema, MINUTE_S, tokens, int(buckets[0]), int(buckets[-1]) + interval)
    minute_bars = minute_bars[np.isin(minute_bars["bucket"] // interval * interval, buckets)]
    coarse = coarse_bars(minute_bars, interval) if len(minute_bars) else np.empty(0, BAR_DTYPE)
    return sum((await writer.write(Results(bars=coarse))).values())
