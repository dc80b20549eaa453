"""TimescaleWriter against the real PostgreSQL: idempotent, newest-version-wins upserts."""

from __future__ import annotations

import datetime as dt

import asyncpg
import numpy as np
import pytest
import sink_helpers as h

from pipeline.records.rollups import (
    CHAIN_BAR_DTYPE,
    STRIKE_BAR_DTYPE,
    VOL_INDEX_DTYPE,
    rows_of,
)
from sinks.instrument_store import load_instrument_index, write_instruments
from sinks.result_writer import Results, ResultWriter
from sinks.timescale_writer import TimescaleWriter

pytestmark = pytest.mark.integration
UTC = dt.timezone.utc


@pytest.fixture
def writer(pool, pg_schema):
    return TimescaleWriter(pool, pg_schema)


async def _rows(pool, sql: str, *args):
    return [dict(r) for r in await pool.fetch(sql, *args)]


async def test_write_bars_fresh_rows_converted(writer, pool, pg_schema):
    bars = h.bars(60, tokens=(h.CALL, h.PUT))
    bars["vwap"][0] = np.nan
    bars["iv"][1] = np.nan
    bars["stale"][1] = 1.0
    bars["forward_source"][1] = np.nan
    assert await writer.write_bars(60, bars) == 2
    rows = await _rows(pool, f'SELECT * FROM "{pg_schema}".bars_1m ORDER BY instrument_token')
    assert len(rows) == 2
    call, put = rows
    assert call["bucket"] == dt.datetime.fromtimestamp(1_900_000_020 // 60 * 60, UTC)
    assert call["last_recv_ts"] == dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=1_900_000_059_123_456)
    assert call["vwap"] is None and put["vwap"] == 99.5
    assert put["iv"] is None and call["iv"] == 0.15
    assert call["close"] == 100.0 and call["volume"] == 1500 and call["tick_count"] == 42 and call["oi_low"] == 7900
    assert (call["mid_iv"], call["forward_source"], call["stale"], call["near_expiry"]) == (0.149, "parity", False, False)
    assert put["stale"] is True and put["forward_source"] is None


async def test_write_bars_older_redelivery_does_not_overwrite_newer(writer, pool, pg_schema):
    newer = h.bars(300, last_recv_ts=2_000, close=101.0)
    older = h.bars(300, last_recv_ts=1_000, close=100.0)
    assert await writer.write_bars(300, newer) == 1
    assert await writer.write_bars(300, older) == 0
    rows = await _rows(pool, f'SELECT close FROM "{pg_schema}".bars_5m')
    assert rows == [{"close": 101.0}]
    newest = h.bars(300, last_recv_ts=3_000, close=102.0)
    assert await writer.write_bars(300, newest) == 1
    assert await _rows(pool, f'SELECT close FROM "{pg_schema}".bars_5m') == [{"close": 102.0}]


async def test_write_bars_same_batch_twice_same_rows(writer, pool, pg_schema):
    bars = h.bars(900, tokens=(h.CALL, h.PUT, h.FUT))
    await writer.write_bars(900, bars)
    first = await _rows(pool, f'SELECT * FROM "{pg_schema}".bars_15m ORDER BY instrument_token')
    await writer.write_bars(900, bars)
    assert await _rows(pool, f'SELECT * FROM "{pg_schema}".bars_15m ORDER BY instrument_token') == first
    assert len(first) == 3


async def test_write_bars_versions_in_one_batch_newest_kept(writer, pool, pg_schema):
    batch = np.concatenate([h.bars(60, last_recv_ts=5_000, close=105.0), h.bars(60, last_recv_ts=4_000, close=104.0)])
    assert await writer.write_bars(60, batch) == 1
    assert await _rows(pool, f'SELECT close FROM "{pg_schema}".bars_1m') == [{"close": 105.0}]


def _with_ticks(bars: np.ndarray, tick_count: int) -> np.ndarray:
    bars["tick_count"] = tick_count
    return bars


async def test_write_bars_partial_replay_with_equal_version_does_not_overwrite(writer, pool, pg_schema):
    """A restarted worker replaying a bucket from its middle re-emits a partial bar: same last_recv_ts,
    fewer ticks. It must not replace the complete bar; an equal version with as many or more ticks does."""
    complete = _with_ticks(h.bars(60, last_recv_ts=7_000, close=101.0), 60)
    assert await writer.write_bars(60, complete) == 1
    partial = _with_ticks(h.bars(60, last_recv_ts=7_000, close=99.0), 12)
    assert await writer.write_bars(60, partial) == 0
    assert await _rows(pool, f'SELECT close, tick_count FROM "{pg_schema}".bars_1m') == [
        {"close": 101.0, "tick_count": 60}]
    same = _with_ticks(h.bars(60, last_recv_ts=7_000, close=102.0), 60)
    assert await writer.write_bars(60, same) == 1  # equal version, equal ticks: replaces (idempotent replays)
    more = _with_ticks(h.bars(60, last_recv_ts=7_000, close=103.0), 61)
    assert await writer.write_bars(60, more) == 1
    assert await _rows(pool, f'SELECT close, tick_count FROM "{pg_schema}".bars_1m') == [
        {"close": 103.0, "tick_count": 61}]
    # a restarted worker's one-tick "correction" for a bucket older than its replay: newer, fewer ticks
    newer_fewer = _with_ticks(h.bars(60, last_recv_ts=8_000, close=104.0), 1)
    assert await writer.write_bars(60, newer_fewer) == 0
    moved_baseline = _with_ticks(h.bars(60, last_recv_ts=9_000, close=103.0), 61)
    assert await writer.write_bars(60, moved_baseline) == 1  # same ticks, newer version: replaces
    assert await _rows(pool, f'SELECT close, tick_count, last_recv_ts FROM "{pg_schema}".bars_1m') == [
        {"close": 103.0, "tick_count": 61,
         "last_recv_ts": dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=9_000)}]


async def test_write_bars_equal_versions_in_one_batch_most_ticks_kept(writer, pool, pg_schema):
    batch = np.concatenate([_with_ticks(h.bars(60, last_recv_ts=5_000, close=98.0), 3),
                            _with_ticks(h.bars(60, last_recv_ts=5_000, close=105.0), 60),
                            _with_ticks(h.bars(60, last_recv_ts=5_000, close=97.0), 7)])
    assert await writer.write_bars(60, batch) == 1
    assert await _rows(pool, f'SELECT close, tick_count FROM "{pg_schema}".bars_1m') == [
        {"close": 105.0, "tick_count": 60}]


async def test_write_bars_wrong_interval_raises_value_error(writer):
    with pytest.raises(ValueError):
        await writer.write_bars(120, h.bars(120))
    with pytest.raises(ValueError):
        await writer.write_bars(60, h.bars(300))  # rows of another interval


async def test_write_bars_empty_returns_zero(writer):
    assert await writer.write_bars(60, h.bars()[:0]) == 0


async def test_write_ticks_replay_idempotent(writer, pool, pg_schema):
    ticks = h.ticks()
    ticks["last_trade_ts"][2] = 1_899_999_990
    assert await writer.write_ticks(ticks) == 4
    assert await writer.write_ticks(ticks) == 0
    assert await writer.write_ticks(np.concatenate([ticks, ticks])) == 0
    rows = await _rows(pool, f'SELECT * FROM "{pg_schema}".ticks ORDER BY recv_ts')
    assert len(rows) == 4
    spot, call = rows[0], rows[2]
    assert spot["iv"] is None and spot["ask"] is None and call["iv"] == 0.14
    assert call["recv_ts"] == dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=1_900_000_000_000_003)
    assert call["exchange_ts"] == dt.datetime.fromtimestamp(1_900_000_000, UTC)
    assert call["last_trade_ts"] == dt.datetime.fromtimestamp(1_899_999_990, UTC) and spot["last_trade_ts"] is None
    assert (call["mid_iv"], call["forward_source"], call["stale"]) == (0.141, "future", False)
    assert spot["mid_iv"] is None and spot["forward_source"] is None and spot["stale"] is None


async def test_write_instruments_upsert_updates_existing(writer, pool, pg_schema):
    rows = h.instrument_rows()
    assert await writer.write_instruments(rows) == 4
    changed = [{**rows[2], "last_price": 123.4, "lot_size": 50}]
    assert await writer.write_instruments(changed) == 1
    got = await _rows(pool, f'SELECT * FROM "{pg_schema}".instruments ORDER BY instrument_token')
    assert len(got) == 4
    by_token = {r["instrument_token"]: r for r in got}
    assert by_token[h.CALL]["last_price"] == 123.4 and by_token[h.CALL]["lot_size"] == 50
    assert by_token[h.CALL]["expiry"] == h.EXPIRY and by_token[h.SPOT]["expiry"] is None
    index = await load_instrument_index(pool, pg_schema)
    assert index.underlying_of(h.SPOT) == "NIFTY" and index.underlying_of(h.CALL) == "NIFTY"


async def test_module_write_instruments_opens_and_closes(pg_dsn, pg_schema, pool):
    assert await write_instruments(pg_dsn, pg_schema, h.instrument_rows()) == 4
    assert await pool.fetchval(f'SELECT count(*) FROM "{pg_schema}".instruments') == 4


async def test_module_write_instruments_unmigrated_schema_raises(pg_dsn, unique_name):
    with pytest.raises(RuntimeError, match="migrate"):
        await write_instruments(pg_dsn, f"nosuch_{unique_name}", h.instrument_rows())


async def test_result_writer_splits_every_part_by_interval_into_its_table(pool, pg_schema):
    strike = rows_of(STRIKE_BAR_DTYPE, 60, [{"underlying": "NIFTY", "expiry": "2030-01-31", "strike": 22000.0,
                                              "bucket": 1_900_000_020, "call_oi": 9000, "last_recv_ts": 5}])
    vix = rows_of(VOL_INDEX_DTYPE, 300, [{"underlying": "NIFTY", "bucket": 1_900_000_200, "vix": 14.5,
                                          "near_expiry": "2030-01-31", "last_recv_ts": 5}])
    results = Results(bars=np.concatenate([h.bars(60), h.bars(300), h.bars(900)]), strike_rows=strike,
                      vol_index_rows=vix)
    written = await ResultWriter(pool, pg_schema).write(results)
    assert written == {"bars_1m": 1, "bars_5m": 1, "bars_15m": 1, "strike_bars_1m": 1, "vol_index_5m": 1}
    got = await _rows(pool, f'SELECT vix, near_expiry, next_expiry FROM "{pg_schema}".vol_index_5m')
    assert got == [{"vix": 14.5, "near_expiry": h.EXPIRY, "next_expiry": None}]
    historical = ResultWriter(pool, pg_schema, source="historical")
    assert await historical.write(Results(bars=h.bars(60))) == {"bars_1m": 0}  # never over a live bar
    with pytest.raises(ValueError, match="historical"):
        ResultWriter(pool, pg_schema, source="candles")


async def test_views_option_bars_and_strike_distribution_filled(writer, pool, pg_schema):
    await writer.write_instruments(h.instrument_rows())
    await writer.write_bars(60, h.bars(60, tokens=(h.CALL, h.PUT, h.FUT)))
    later = h.bars(60, tokens=(h.CALL,), bucket=1_900_000_080, last_recv_ts=1_900_000_100_000_000, close=110.0)
    await writer.write_bars(60, later)
    options = await _rows(pool, f'SELECT * FROM "{pg_schema}".option_bars_1m ORDER BY bucket, instrument_token')
    assert [(r["option_type"], r["underlying"]) for r in options] == [("CE", "NIFTY"), ("PE", "NIFTY"), ("CE", "NIFTY")]
    assert options[0]["moneyness"] == pytest.approx(np.log(22000.0 / 22100.0))
    dist = await _rows(pool, f'SELECT * FROM "{pg_schema}".strike_oi_distribution')
    assert len(dist) == 1
    assert dist[0]["strike"] == 22000.0 and dist[0]["call_oi"] == 9000 and dist[0]["put_oi"] == 9000
    assert dist[0]["call_close"] == 110.0 and dist[0]["put_close"] == 100.0
    assert await pool.fetch(f'SELECT * FROM "{pg_schema}".pcr_1m') == []


async def test_write_bars_db_unreachable_raises(pg_schema):
    from pipeline.commands.local_services import free_port

    with pytest.raises((OSError, asyncpg.PostgresError)):
        pool = await asyncpg.create_pool(f"postgresql://postgres@127.0.0.1:{free_port()}/x", min_size=0, max_size=1)
        await TimescaleWriter(pool, pg_schema).write_bars(60, h.bars())


async def test_write_strike_and_chain_bars_newest_wins(writer, pool, pg_schema):
    row = {"underlying": "NIFTY", "expiry": "2030-01-31", "strike": 22000.0, "bucket": 1_900_000_020,
           "forward": 22100.0, "call_oi": 9000, "put_oi": 12000, "call_iv": float("nan"), "put_iv": 0.16,
           "call_buildup": "long_buildup", "last_recv_ts": 1_900_000_059_000_000}
    assert await writer.write_strike_bars(60, rows_of(STRIKE_BAR_DTYPE, 60, [row])) == 1
    older = rows_of(STRIKE_BAR_DTYPE, 60, [{**row, "put_oi": 1, "last_recv_ts": 1}])
    assert await writer.write_strike_bars(60, older) == 0  # an older version never replaces
    got = await _rows(pool, f'SELECT * FROM "{pg_schema}".strike_bars_1m')
    assert len(got) == 1 and got[0]["put_oi"] == 12000 and got[0]["call_iv"] is None and got[0]["call_volume"] is None
    assert got[0]["call_buildup"] == "long_buildup" and got[0]["put_buildup"] is None
    assert got[0]["expiry"] == h.EXPIRY and got[0]["bucket"] == dt.datetime.fromtimestamp(1_900_000_020, UTC)
    assert got[0]["last_recv_ts"] == dt.datetime.fromtimestamp(1_900_000_059, UTC)
    chain = rows_of(CHAIN_BAR_DTYPE, 300, [{"underlying": "NIFTY", "expiry": np.datetime64("2030-01-31"),
                                            "bucket": 1_900_000_200, "total_call_oi": 9000, "total_put_oi": 12000,
                                            "pcr": 12000 / 9000, "max_pain": 22000.0, "last_recv_ts": 5}])
    assert await writer.write_chain_bars(300, chain) == 1
    pcr = await _rows(pool, f'SELECT underlying, expiry, pcr, max_pain, atm_iv FROM "{pg_schema}".pcr_5m')
    assert pcr == [{"underlying": "NIFTY", "expiry": h.EXPIRY, "pcr": pytest.approx(4 / 3), "max_pain": 22000.0,
                    "atm_iv": None}]
    with pytest.raises(ValueError, match="no chain_bars table"):
        await writer.write_chain_bars(120, chain)
    with pytest.raises(ValueError, match="other intervals"):
        await writer.write_chain_bars(60, chain)
    with pytest.raises(ValueError, match="chain_bars rows"):
        await writer.write_chain_bars(300, rows_of(STRIKE_BAR_DTYPE, 300, [row]))
