"""The one writer of the worker's results: bars of every interval, strike and chain rollups and the
volatility index, into their tables.

The live store agents, the replay and the backfill all write through :meth:`ResultWriter.write`, so a row
reaches its table the same way whoever computed it: each part split by interval into its table
(``bars_1m`` .. ``vol_index_15m``), each table in one transaction of a binary COPY and one upsert
(``sinks.timescale_writer``). Bars from a backfill (``source="historical"``) are inserted only where no bar
exists. Errors propagate: the caller's error policy decides (retry a transient one; a poison record goes
to the dead letters).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.records.bars import BAR_DTYPE
from pipeline.records.rollups import CHAIN_BAR_DTYPE, STRIKE_BAR_DTYPE, VOL_INDEX_DTYPE
from pipeline.records.time_units import label_of
from sinks.timescale_writer import TimescaleWriter


@dataclass(frozen=True)
class Results:
    """Rows to store, every interval mixed: closed bars (BAR_DTYPE), strike rows (STRIKE_BAR_DTYPE), chain rows
    (CHAIN_BAR_DTYPE) and volatility index rows (VOL_INDEX_DTYPE)."""

    bars: np.ndarray = field(default_factory=lambda: np.empty(0, BAR_DTYPE))
    strike_rows: np.ndarray = field(default_factory=lambda: np.empty(0, STRIKE_BAR_DTYPE))
    chain_rows: np.ndarray = field(default_factory=lambda: np.empty(0, CHAIN_BAR_DTYPE))
    vol_index_rows: np.ndarray = field(default_factory=lambda: np.empty(0, VOL_INDEX_DTYPE))

    @classmethod
    def joined(cls, parts: Iterable[Results]) -> Results:
        """Several results as one (each part's rows in order)."""
        parts = list(parts)
        if len(parts) == 1:
            return parts[0]
        empty = cls()
        return cls(*(np.concatenate([getattr(p, name) for p in parts] or [getattr(empty, name)])
                     for name in ("bars", "strike_rows", "chain_rows", "vol_index_rows")))

    def __len__(self) -> int:
        return len(self.bars) + len(self.strike_rows) + len(self.chain_rows) + len(self.vol_index_rows)


class ResultWriter:
    """Writes :class:`Results` (see the module docstring); ``pool`` an asyncpg pool or connection."""

    def __init__(self, pool: Any, schema: str, source: str = "live") -> None:
        if source not in ("live", "historical"):
            raise ValueError(f"results come from 'live' or 'historical', not {source!r}")
        self.tables = TimescaleWriter(pool, schema)
        self.source = source

    async def write(self, results: Results) -> dict[str, int]:
        """Write every part; rows inserted or updated per table (``{"bars_1m": 12, "chain_bars_1m": 2}``),
        tables without rows left out."""
        tables = self.tables
        parts: list[tuple[str, np.ndarray, Callable[[int, np.ndarray], Awaitable[int]]]] = [
            ("bars", results.bars, lambda interval, rows: tables.write_bars(interval, rows, self.source)),
            ("strike_bars", results.strike_rows, tables.write_strike_bars),
            ("chain_bars", results.chain_rows, tables.write_chain_bars),
            ("vol_index", results.vol_index_rows, tables.write_vol_index),
        ]
        written: dict[str, int] = {}
        for prefix, rows, write in parts:
            for interval in np.unique(rows["interval_s"]).tolist():
                written[f"{prefix}_{label_of(interval)}"] = await write(interval, rows[rows["interval_s"] == interval])
        return written


__all__ = ["ResultWriter", "Results"]
