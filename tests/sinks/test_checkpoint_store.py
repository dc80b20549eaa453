"""worker_checkpoints on the real PostgreSQL: save, replace, never go back, load."""

from __future__ import annotations

import asyncpg
import pytest

from sinks.checkpoint_store import CheckpointKey, load_checkpoint, save_checkpoint

pytestmark = pytest.mark.integration


async def test_checkpoint_saved_replaced_and_loaded_per_partition(pool, pg_schema):
    key, other = CheckpointKey("app", "ticks", 0), CheckpointKey("app", "ticks", 1)
    assert await load_checkpoint(pool, pg_schema, key) is None
    await save_checkpoint(pool, pg_schema, key, 10, 1, b"state-10")
    await save_checkpoint(pool, pg_schema, other, 3, 1, b"other")
    await save_checkpoint(pool, pg_schema, key, 25, 1, b"state-25" * 100_000)  # a few MB go through
    got = await load_checkpoint(pool, pg_schema, key)
    assert (got.next_offset, got.format, got.state) == (25, 1, b"state-25" * 100_000)
    assert (await load_checkpoint(pool, pg_schema, other)).state == b"other"


async def test_an_older_checkpoint_never_replaces_a_newer_one(pool, pg_schema):
    key = CheckpointKey("app", "ticks", 2)
    await save_checkpoint(pool, pg_schema, key, 50, 1, b"new")
    await save_checkpoint(pool, pg_schema, key, 40, 1, b"stale owner")  # a revoked worker, late
    assert (await load_checkpoint(pool, pg_schema, key)).state == b"new"


async def test_unmigrated_schema_is_a_clear_error(pool):
    with pytest.raises(asyncpg.UndefinedTableError):
        await load_checkpoint(pool, "public_not_migrated_xyz", CheckpointKey("a", "t", 0))
