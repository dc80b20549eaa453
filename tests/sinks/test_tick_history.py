"""Stored ticks read back as the records they came in (``sinks.tick_history``), against the real PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.records.ticks import MODE_FULL, TICK_DTYPE, priced_ticks, record_starts
from sinks.tick_history import count_ticks, read_tick_records, split_records
from sinks.timescale_writer import TimescaleWriter


def _ticks(recv_ts: list[int], tokens: list[int], exchange_ts: int = 1_780_000_000) -> np.ndarray:
    t = np.zeros(len(recv_ts), TICK_DTYPE)
    t["recv_ts"], t["instrument_token"], t["exchange_ts"] = recv_ts, tokens, exchange_ts
    t["mode"], t["last_price"], t["volume"], t["oi"] = MODE_FULL, 100.5, 10, 7
    t["bid"], t["ask"], t["last_trade_ts"] = 100.0, np.nan, exchange_ts - 3
    return t


@pytest.mark.unit
def test_split_records_cuts_where_the_record_key_changes() -> None:
    ticks = _ticks([1, 2, 3, 4, 5], [10, 11, 10, 11, 12])
    parts = split_records(ticks, np.array([1, 1, 3, 3, 3]))
    assert [p["recv_ts"].tolist() for p in parts] == [[1, 2], [3, 4, 5]]
    assert split_records(ticks[:0], np.empty(0, np.int64)) == []


@pytest.mark.unit
def test_record_starts_gives_each_tick_its_records_first_receive_time() -> None:
    records = [_ticks([7, 8], [1, 2]), _ticks([], []), _ticks([20, 21, 22], [1, 2, 3])]
    assert record_starts(records).tolist() == [7, 7, 20, 20, 20]


@pytest.mark.integration
async def test_stored_ticks_come_back_as_the_same_records_across_fetches(pool, pg_schema) -> None:
    # two underlyings' records interleave in receive order, as the ingestor produces them
    a1, b1 = _ticks([1_000, 1_002, 1_004], [101, 102, 101]), _ticks([1_001, 1_003], [201, 202])
    a2 = _ticks([2_000, 2_001], [101, 102], exchange_ts=1_780_000_001)
    writer = TimescaleWriter(pool, pg_schema)
    for record in (a1, b1, a2):
        await writer.write_ticks(priced_ticks(record), record_starts([record]))
    async with pool.acquire() as conn:
        read = [r async for chunk in read_tick_records(conn, pg_schema, 0, 2e9, fetch_rows=2) for r in chunk]
    assert [r["recv_ts"].tolist() for r in read] == [[1_000, 1_002, 1_004], [1_001, 1_003], [2_000, 2_001]]
    for got, sent in zip(read, (a1, b1, a2), strict=True):
        for name in TICK_DTYPE.names:
            assert np.array_equal(got[name], sent[name], equal_nan=True), name
    assert await count_ticks(pool, pg_schema, 1_780_000_001, 2e9) == 2


@pytest.mark.integration
async def test_ticks_stored_without_a_record_are_grouped_by_receive_millisecond(pool, pg_schema) -> None:
    writer = TimescaleWriter(pool, pg_schema)
    await writer.write_ticks(priced_ticks(_ticks([5_000, 5_400, 6_100], [1, 2, 1])))
    async with pool.acquire() as conn:
        await conn.execute(f'UPDATE "{pg_schema}".ticks SET record_recv_ts = NULL')
        read = [r async for chunk in read_tick_records(conn, pg_schema, 0, 2e9) for r in chunk]
    assert [r["recv_ts"].tolist() for r in read] == [[5_000, 5_400], [6_100]]
