"""The ``instruments`` table: the ingestor writes the universe it subscribes, the worker reads it to price.

``write_instruments`` opens its own connection (the ingestor has no pool);
``load_instrument_index`` reads through the worker's pool. A missing table is
a schema that was never migrated: one clear RuntimeError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from pipeline.records.instruments import InstrumentIndex
from sinks.migrate import quote_ident
from sinks.timescale_writer import TimescaleWriter


async def load_instrument_index(pool: Any, schema: str) -> InstrumentIndex:
    """Read the ``instruments`` table (written by the ingestor) into an index."""
    rows = await pool.fetch(
        f"SELECT instrument_token, tradingsymbol, name, expiry, strike, instrument_type, segment "
        f"FROM {quote_ident(schema)}.instruments"
    )
    return InstrumentIndex.from_rows(dict(r) for r in rows)


async def write_instruments(dsn: str, schema: str, rows: list[Mapping[str, Any]]) -> int:
    """Open a connection, upsert ``rows`` into ``<schema>.instruments``, close. For the ingestor's start-up."""
    conn = await asyncpg.connect(dsn)
    try:
        return await TimescaleWriter(conn, schema).write_instruments(rows)
    except asyncpg.UndefinedTableError as exc:
        raise RuntimeError(f"schema {schema} has no instruments table: run `strikeflow migrate` first") from exc
    finally:
        await conn.close()
