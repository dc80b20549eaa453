"""Replay: rebuild one schema's bars, strike bars and chain bars from another schema's stored ticks.

The live worker's code, not a second implementation: the stored ticks are read back as the very
records the process agent handled (``sinks.tick_history``), and each one goes through the same
``seed_rollups`` and engine (``pipeline.core.engines.Engines``) built from the same settings;
the results are written with the same ``ResultWriter`` the store agents use. So a replay
recomputes a day after a fix, and on an unchanged build proves determinism: the target's bars equal
the source's in every column.

What a replay cannot see: the ingestor's clock records (they are not stored). They close a quiet
underlying's bars on time; without them a bar closes at the next tick instead, with the same content.
The last open bucket of the range stays open, as it did live. ``since`` is rounded down to the start of
its coarsest bar, so every replayed bar is whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.engines import Engines
from pipeline.core.outputs import EngineConfig, EngineOutputs
from pipeline.records.instruments import InstrumentIndex
from pipeline.runtime.settings import Settings
from sinks.bar_history import seed_rollups
from sinks.instrument_store import load_instrument_index
from sinks.migrate import quote_ident
from sinks.result_writer import Results, ResultWriter
from sinks.tick_history import count_ticks, read_tick_records

FLUSH_ROWS = 20_000  # rows of results held before they are written


@dataclass
class ReplayProgress:
    """How far a replay is: ticks read of the range's total, records processed, rows written."""

    ticks_total: int
    ticks_done: int = 0
    records: int = 0
    bars: int = 0
    strike_rows: int = 0
    chain_rows: int = 0
    started_at: float = field(default_factory=time.monotonic)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_at

    def line(self) -> str:
        share = 100.0 * self.ticks_done / self.ticks_total if self.ticks_total else 100.0
        rate = self.ticks_done / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (f"{self.ticks_done:,}/{self.ticks_total:,} ticks ({share:.0f} %), {self.records:,} records, "
                f"{self.bars:,} bars, {self.strike_rows:,} strike rows, {self.chain_rows:,} chain rows, "
                f"{rate:,.0f} ticks/s")


def coarsest_bucket_start(since: float, settings: Settings) -> int:
    """``since`` (epoch s) rounded down to the start of its bucket of the coarsest bar interval."""
    coarsest = max(settings.bar_intervals_s)
    return int(since) // coarsest * coarsest


async def copy_instruments(conn: Any, source: str, target: str) -> int:
    """Copy the source schema's instruments into the target (the universe the replayed ticks were priced on)."""
    status = await conn.execute(
        f"INSERT INTO {quote_ident(target)}.instruments SELECT * FROM {quote_ident(source)}.instruments "
        f"ON CONFLICT (instrument_token) DO NOTHING")
    return int(status.rsplit(" ", 1)[-1])


class _Held:
    """Results held until ``FLUSH_ROWS`` rows are waiting, then written in one upsert per table."""

    def __init__(self, writer: ResultWriter, progress: ReplayProgress) -> None:
        self.writer, self.progress = writer, progress
        self.parts: list[Results] = []
        self.held = 0

    async def add(self, out: EngineOutputs) -> None:
        bars = {} if out.bars is None else {"bars": out.bars}
        part = Results(strike_rows=out.strike_rows, chain_rows=out.chain_rows, vol_index_rows=out.vol_index_rows, **bars)
        if len(part):
            self.parts.append(part)
            self.held += len(part)
        if self.held >= FLUSH_ROWS:
            await self.flush()

    async def flush(self) -> None:
        if self.parts:
            results = Results.joined(self.parts)
            await self.writer.write(results)
            self.progress.bars += len(results.bars)
            self.progress.strike_rows += len(results.strike_rows)
            self.progress.chain_rows += len(results.chain_rows)
        self.parts, self.held = [], 0


async def replay_ticks(source_conn: Any, target_pool: Any, settings: Settings, source: str, target: str,
                       since: float, until: float,
                       on_progress: Callable[[ReplayProgress], None] = lambda _: None) -> ReplayProgress:
    """Rebuild ``target``'s bars and rollups from ``source``'s ticks with exchange time in [since, until)
    (epoch s; ``since`` as given, see ``coarsest_bucket_start``). ``source_conn`` an ``asyncpg.Connection``
    (it holds the read cursor), ``target_pool`` a pool or connection on a migrated ``target`` schema."""
    index: InstrumentIndex = await load_instrument_index(source_conn, source)
    await copy_instruments(target_pool, source, target)
    engines = Engines(EngineConfig.from_settings(settings), index)
    progress = ReplayProgress(await count_ticks(source_conn, source, since, until))
    results = _Held(ResultWriter(target_pool, target), progress)
    async for records in read_tick_records(source_conn, source, since, until):
        for ticks in records:
            progress.ticks_done += len(ticks)
            underlying = index.underlying_of(int(ticks["instrument_token"][0])) if len(ticks) else None
            if underlying is None:
                continue  # a token the instruments table does not list: the ingestor never produced it
            await seed_rollups(engines, underlying, ticks, target_pool, target)
            await results.add(engines.process(underlying, ticks))
            progress.records += 1
        on_progress(progress)
    await results.flush()
    on_progress(progress)
    return progress
