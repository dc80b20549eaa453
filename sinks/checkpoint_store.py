"""The ``worker_checkpoints`` table: one row per (app, ticks topic, partition), replaced at every checkpoint.

``next_offset`` is the offset of the first record the state does not reflect;
the state bytes are ``pipeline.core.checkpoint``'s. A save is one upsert in one
round trip; errors (connection, missing table) propagate to the caller, which
keeps the records unacked and tries again at the next checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sinks.migrate import check_schema_name, quote_ident


@dataclass(frozen=True)
class CheckpointKey:
    app_id: str
    topic: str
    partition: int


@dataclass(frozen=True)
class StoredCheckpoint:
    next_offset: int
    format: int
    state: bytes


def _table(schema: str) -> str:
    return f"{quote_ident(check_schema_name(schema))}.worker_checkpoints"


async def save_checkpoint(pool: Any, schema: str, key: CheckpointKey, next_offset: int, fmt: int, state: bytes) -> None:
    await pool.execute(
        f"INSERT INTO {_table(schema)} AS c (app_id, topic, partition, next_offset, format, state, taken_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, now()) "
        "ON CONFLICT (app_id, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, "
        "format = EXCLUDED.format, state = EXCLUDED.state, taken_at = EXCLUDED.taken_at "
        "WHERE EXCLUDED.next_offset >= c.next_offset",  # never back: a slow old owner loses to the new one
        key.app_id, key.topic, key.partition, next_offset, fmt, state,
    )


async def load_checkpoint(pool: Any, schema: str, key: CheckpointKey) -> StoredCheckpoint | None:
    row = await pool.fetchrow(
        f"SELECT next_offset, format, state FROM {_table(schema)} WHERE app_id = $1 AND topic = $2 AND partition = $3",
        key.app_id, key.topic, key.partition,
    )
    return None if row is None else StoredCheckpoint(int(row["next_offset"]), int(row["format"]), bytes(row["state"]))
