"""Bar rows as they land in PostgreSQL, seen from outside the worker (for ``strikeflow bench``).

``BarWatch`` polls the row count per bucket of ``bars_1m/5m/15m`` every
``poll_s``; each new row is stamped with the poll's time, so ``now - (bucket
+ interval)`` is the bar latency an analyst sees: from the exchange time of the
bucket's end to its row being committed (it includes the grace a bar waits for
stragglers, and is only as fine as ``poll_s``). The simulator runs exchange
time at wall speed from "now" in the benchmark, so the two clocks agree.
"""

from __future__ import annotations

import array
import asyncio
import time
from collections.abc import Callable, Iterable

import asyncpg
import numpy as np

from sinks.migrate import quote_ident
from sinks.table_columns import BAR_TABLES


class BarWatch:
    def __init__(self, pg_dsn: str, schema: str, since_epoch_s: float, *, poll_s: float = 0.5,
                 clock: Callable[[], float] = time.time) -> None:
        self.pg_dsn = pg_dsn
        self.schema = quote_ident(schema)
        self.since = since_epoch_s
        self.poll_s = poll_s
        self.clock = clock
        self.measuring = False
        self.latencies_ms = array.array("f")
        self.rows_seen = 0
        self._counts: dict[tuple[int, int], int] = {}

    async def run(self, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(self.pg_dsn)
        try:
            while not stop.is_set():
                await self.poll(conn)
                try:
                    await asyncio.wait_for(stop.wait(), self.poll_s)
                except asyncio.TimeoutError:
                    pass
        finally:
            await conn.close()

    async def poll(self, conn: asyncpg.Connection) -> None:
        for interval, table in BAR_TABLES.items():
            rows = await conn.fetch(
                f"SELECT extract(epoch FROM bucket)::bigint AS b, count(*) AS n FROM {self.schema}.{table} "
                f"WHERE bucket >= to_timestamp($1) GROUP BY 1", self.since)
            now = self.clock()
            for row in rows:
                key = (interval, int(row["b"]))
                new = int(row["n"]) - self._counts.get(key, 0)
                if new <= 0:
                    continue
                self._counts[key] = int(row["n"])
                self.rows_seen += new
                if self.measuring:
                    self.latencies_ms.extend([(now - (key[1] + interval)) * 1000.0] * new)

    def latencies(self) -> np.ndarray:
        return np.frombuffer(self.latencies_ms, dtype=np.float32)


async def missing_bars(pg_dsn: str, schema: str, keys: Iterable[tuple[int, int, int]]) -> int:
    """How many of ``(interval_s, instrument_token, bucket epoch s)`` have no row in their bar table."""
    wanted: dict[int, set[tuple[int, int]]] = {}
    for interval, token, bucket in keys:
        wanted.setdefault(interval, set()).add((token, bucket))
    conn = await asyncpg.connect(pg_dsn)
    try:
        missing = 0
        for interval, pairs in wanted.items():
            rows = await conn.fetch(
                f"SELECT instrument_token, extract(epoch FROM bucket)::bigint AS b FROM {quote_ident(schema)}."
                f"{BAR_TABLES[interval]} WHERE bucket >= to_timestamp($1)", min(b for _, b in pairs))
            stored = {(int(r["instrument_token"]), int(r["b"])) for r in rows}
            missing += len(pairs - stored)
        return missing
    finally:
        await conn.close()
