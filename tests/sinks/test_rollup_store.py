"""OI rollup rows (pipeline.core.rollups) through TimescaleWriter into strike_bars_1m / chain_bars_1m and back."""

from __future__ import annotations

import datetime as dt

import asyncpg
import numpy as np
import pytest
import sink_helpers as h

from pipeline.core.rollups import OIRollup
from pipeline.records.rollups import (
    CHAIN_BAR_DTYPE,
    decode_rollups,
    encode_rollups,
)
from sinks.migrate import migrate
from sinks.timescale_writer import TimescaleWriter

pytestmark = pytest.mark.integration
UTC = dt.timezone.utc


async def test_rollup_rows_written_read_back_late_version_wins(pg_dsn, pg_schema):
    await migrate(pg_dsn, pg_schema)
    index, rollup = h.index(), OIRollup("NIFTY", 60)
    first = h.bars(60, tokens=(h.CALL, h.PUT, h.FUT), last_recv_ts=1_900_000_059_000_000)
    first["oi"] = [9000, 12000, 5]
    late = h.bars(60, tokens=(h.CALL,), last_recv_ts=1_900_000_099_000_000)
    late["oi"] = 9500
    conn = await asyncpg.connect(pg_dsn)
    try:
        writer = TimescaleWriter(conn, pg_schema)
        for bars in (first, late):
            _, strike, chain, _ = decode_rollups(encode_rollups("NIFTY", *rollup.update(bars, index)))
            assert await writer.write_strike_bars(60, strike) == 1
            assert await writer.write_chain_bars(60, chain) == 1
        # an older redelivery of the first version does not overwrite the correction
        stale = OIRollup("NIFTY", 60).update(first, index)
        assert await writer.write_chain_bars(60, stale[1]) == 0
        strike_rows = [dict(r) for r in await conn.fetch(f'SELECT * FROM "{pg_schema}".strike_bars_1m')]
        chain_rows = [dict(r) for r in await conn.fetch(f'SELECT * FROM "{pg_schema}".chain_bars_1m')]
    finally:
        await conn.close()
    bucket = dt.datetime.fromtimestamp(first["bucket"][0], UTC)
    assert len(strike_rows) == 1 and len(chain_rows) == 1
    s, c = strike_rows[0], chain_rows[0]
    assert (s["underlying"], s["expiry"], s["strike"], s["bucket"]) == ("NIFTY", h.EXPIRY, 22000.0, bucket)
    assert s["call_oi"] == 9500 and s["put_oi"] == 12000 and s["call_oi_change"] == 1500  # 9500 - oi_open 8000
    assert s["call_close"] == 100.0 and s["call_iv"] == pytest.approx(0.15) and s["forward"] == 22100.0
    assert s["last_recv_ts"] == dt.datetime.fromtimestamp(1_900_000_099, UTC)
    assert (c["underlying"], c["expiry"], c["bucket"]) == ("NIFTY", h.EXPIRY, bucket)
    assert c["total_call_oi"] == 9500 and c["total_put_oi"] == 12000
    assert c["pcr"] == pytest.approx(12000 / 9500) and c["max_pain"] == 22000.0
    assert c["atm_strike"] == 22000.0 and c["forward"] == 22100.0
    assert c["atm_iv"] is None  # the forward is above the only listed strike: no two strikes bracket it
    assert (c["strikes_listed"], c["strikes_covered"]) == (1, 1) and s["call_mid_iv"] == pytest.approx(0.149)
    assert c["call_volume"] == 1500 and c["put_volume"] == 1500
    assert c["last_recv_ts"] == dt.datetime.fromtimestamp(1_900_000_099, UTC)


async def test_rollup_side_without_bar_written_as_null(pg_dsn, pg_schema):
    await migrate(pg_dsn, pg_schema)
    strike, chain = OIRollup("NIFTY", 60).update(h.bars(60, tokens=(h.CALL,)), h.index())
    conn = await asyncpg.connect(pg_dsn)
    try:
        writer = TimescaleWriter(conn, pg_schema)
        await writer.write_strike_bars(60, strike)
        await writer.write_chain_bars(60, chain)
        s = dict(await conn.fetchrow(f'SELECT * FROM "{pg_schema}".strike_bars_1m'))
        c = dict(await conn.fetchrow(f'SELECT * FROM "{pg_schema}".chain_bars_1m'))
    finally:
        await conn.close()
    assert s["call_oi"] == 9000 and s["put_oi"] is None and s["put_volume"] is None and s["put_close"] is None
    assert c["total_put_oi"] == 0 and c["pcr"] == 0.0 and np.isclose(c["max_pain"], 22000.0)


async def test_offer_chain_rows_published_in_order_never_conflated(redis_url, redis_prefix):
    import json

    import redis.asyncio as aioredis

    from sinks.redis.conflation import ConflatingPublisher
    from sinks.redis.publisher import RedisPublisher

    index, rollup = h.index(), OIRollup("NIFTY", 60)
    client = aioredis.from_url(redis_url)
    pubsub = client.pubsub()
    channel = f"{redis_prefix}chain:NIFTY:{h.EXPIRY.isoformat()}"
    await pubsub.subscribe(channel)
    assert (await pubsub.get_message(timeout=2.0))["type"] == "subscribe"
    conflating = ConflatingPublisher(RedisPublisher(client, prefix=redis_prefix), max_pending=3)
    try:
        for i in range(3):  # three versions of buckets: never conflated, kept in order
            bars = h.bars(60, tokens=(h.CALL, h.PUT), bucket=1_900_000_020 + 60 * i, last_recv_ts=10 + i)
            conflating.offer_chains("NIFTY", rollup.update(bars, index)[1])
        conflating.offer_chains("NIFTY", np.empty(0, CHAIN_BAR_DTYPE))  # nothing to publish: no-op
        await conflating.start()
        got = []
        for _ in range(50):
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if msg and msg["type"] == "message":
                got.append(json.loads(msg["data"], parse_constant=lambda c: pytest.fail(f"invalid JSON {c}")))
            if len(got) == 3:
                break
    finally:
        await conflating.stop()
        await pubsub.aclose()
        await client.aclose()
    assert [m["bucket"] for m in got] == [1_900_000_020 // 60 * 60 + 60 * i for i in range(3)]
    assert all(m["underlying"] == "NIFTY" and m["expiry"] == h.EXPIRY.isoformat() and m["timeframe"] == "1m"
               for m in got)
    assert got[0]["total_call_oi"] == 9000 and got[0]["pcr"] == 1.0 and got[0]["last_recv_ts"] == 10
    assert conflating.published_chains == 3 and conflating.chains_dropped == 0


def test_offer_chain_queue_bounded_drops_oldest():
    from sinks.redis.conflation import ConflatingPublisher
    from sinks.redis.publisher import RedisPublisher

    index, rollup = h.index(), OIRollup("NIFTY", 60)
    conflating = ConflatingPublisher(RedisPublisher(None), max_pending=2)
    for i in range(4):
        conflating.offer_chains("NIFTY", rollup.update(h.bars(60, bucket=1_900_000_020 + 60 * i), index)[1])
    assert conflating.chains_dropped == 2 and [int(r["bucket"][0]) for _, r in conflating._chains] == [
        1_900_000_020 // 60 * 60 + 120, 1_900_000_020 // 60 * 60 + 180]
