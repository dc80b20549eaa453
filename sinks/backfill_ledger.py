"""The backfill's ledger (table ``backfill_checked``, migration 0012): the spans Kite has answered, per instrument.

A session minute inside a recorded span that has no bar had no trade: Kite keeps no candle for a minute
without trades, so asking again would return nothing again. ``load_checked`` reads the spans that
overlap a range as ``CHECKED_DTYPE`` rows (epoch seconds); ``record_checked`` adds spans (idempotent).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.records.bars import CHECKED_DTYPE
from sinks.migrate import check_schema_name, quote_ident


def _table(schema: str) -> str:
    return f"{quote_ident(check_schema_name(schema))}.backfill_checked"


async def load_checked(pool_or_conn: Any, schema: str, tokens: np.ndarray, since: int, until: int) -> np.ndarray:
    """The recorded spans of ``tokens`` that overlap [since, until) (epoch s), as ``CHECKED_DTYPE``."""
    rows = await pool_or_conn.fetch(
        f"SELECT instrument_token, extract(epoch FROM since)::bigint, extract(epoch FROM until)::bigint "
        f"FROM {_table(schema)} WHERE instrument_token = ANY($1::bigint[]) "
        f"AND since < to_timestamp($3) AND until > to_timestamp($2)",
        np.unique(np.asarray(tokens, dtype=np.int64)).tolist(), float(since), float(until))
    return np.array([tuple(r) for r in rows], dtype=CHECKED_DTYPE)


async def record_checked(pool_or_conn: Any, schema: str, spans: np.ndarray) -> int:
    """Add ``CHECKED_DTYPE`` spans (a span already recorded is kept as it is); the number added."""
    if not len(spans):
        return 0
    status = await pool_or_conn.execute(
        f"INSERT INTO {_table(schema)} (instrument_token, since, until) "
        f"SELECT t, to_timestamp(s), to_timestamp(u) FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS x(t, s, u) "
        f"ON CONFLICT DO NOTHING",
        spans["instrument_token"].tolist(), spans["since"].tolist(), spans["until"].tolist())
    return int(status.rsplit(" ", 1)[-1])


__all__ = ["load_checked", "record_checked"]
