"""The one error policy in a real worker: a poison record goes to ``<topic>.dlq`` and the topic goes on."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from worker_helpers import (
    NIFTY_INDEX,
    RECV0_US,
    T0,
    index_ticks,
    start_worker,
    stop_workers,
    wait_for,
    worker_env,
)

from pipeline.commands.local_services import free_port
from pipeline.feed.kafka_topics import bootstrap_servers, ensure_topic
from pipeline.records.bars import BAR_DTYPE, encode_bars
from pipeline.records.ticks import decode_ticks, encode_ticks
from sinks.instrument_store import write_instruments
from sinks.migrate import migrate

pytestmark = pytest.mark.integration


def _bar(bucket: int, interval_s: int, close: float) -> np.ndarray:
    bar = np.zeros(1, BAR_DTYPE)
    for name, value in dict(instrument_token=NIFTY_INDEX["instrument_token"], interval_s=interval_s, bucket=bucket,
                            open=close, high=close, low=close, close=close, tick_count=1, last_recv_ts=1).items():
        bar[name] = value
    for name in ("vwap", "forward", "iv", "delta", "gamma", "theta", "vega", "rho", "mid_iv", "forward_source",
                 "stale", "near_expiry", "spot_delta"):
        bar[name] = np.nan
    return bar


async def _dead_letters(kafka_url: str, topic: str, want: int) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_servers(kafka_url), auto_offset_reset="earliest",
                                group_id=f"{topic}-check")
    await consumer.start()
    try:
        got: list = []
        for _ in range(60):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got += records
            if len(got) >= want:
                break
        return got
    finally:
        await consumer.stop()


async def test_poison_records_go_to_the_dead_letter_topics_and_the_next_records_are_processed(
        kafka_url: str, pg_dsn: str, pg_schema: str, redis_url: str, unique_name: str, tmp_path: Path) -> None:
    await migrate(pg_dsn, pg_schema)
    await write_instruments(pg_dsn, pg_schema, [NIFTY_INDEX])
    env = worker_env(kafka_url, pg_dsn, pg_schema, redis_url, unique_name, STRIKEFLOW_WEB_PORT=str(free_port()),
                     STRIKEFLOW_DATA_DIR=str(tmp_path / "data"), STRIKEFLOW_CHECKPOINT_INTERVAL_S="1")
    for topic in ("ticks", "bars"):
        await ensure_topic(kafka_url, f"{unique_name}-{topic}", 4)
    workers = [start_worker(env, tmp_path / "worker.log")]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(kafka_url))
    await producer.start()
    conn = await asyncpg.connect(pg_dsn)
    try:
        # bars: a record the database can never take (an interval with no table), then a good one, same key
        poison_bar = encode_bars("NIFTY", _bar(T0 - 3600, 120, 1.0))
        await producer.send_and_wait(f"{unique_name}-bars", poison_bar, key=b"NIFTY")
        await producer.send_and_wait(f"{unique_name}-bars", encode_bars("NIFTY", _bar(T0 - 3600, 60, 2.0)),
                                     key=b"NIFTY")
        # ticks: bytes that are no record, then good ticks
        await producer.send_and_wait(f"{unique_name}-ticks", b"\x00not a ticks record", key=b"NIFTY")
        chunks = np.array_split(index_ticks(0, 130, recv_base=RECV0_US + 1_000), 4)
        hostile = chunks[1][:1].copy()
        hostile["exchange_ts"] = 4_000_000_000  # 2096: would end every later bar if it moved event time
        chunks[1] = np.concatenate([chunks[1][:5], hostile, chunks[1][5:]])
        for chunk in chunks:
            await producer.send_and_wait(f"{unique_name}-ticks", encode_ticks("NIFTY", chunk), key=b"NIFTY")

        async def rows(where: str) -> int:
            return await conn.fetchval(f'SELECT count(*) FROM "{pg_schema}".bars_1m WHERE {where}')

        async def good_bar_written() -> bool:
            return await rows(f"bucket = to_timestamp({T0 - 3600}) AND close = 2") == 1

        async def ticks_processed() -> bool:
            return await rows(f"bucket >= to_timestamp({T0})") >= 2

        await wait_for(good_bar_written, 90, "the good bar behind the poison one")
        await wait_for(ticks_processed, 90, "bars from the ticks behind the poison record")
        bars_dead = await _dead_letters(kafka_url, f"{unique_name}-bars.dlq", 1)
        ticks_dead = await _dead_letters(kafka_url, f"{unique_name}-ticks.dlq", 2)
    finally:
        await conn.close()
        await producer.stop()
        stop_workers(workers)
    assert [r.value for r in bars_dead] == [poison_bar]
    assert dict(bars_dead[0].headers)["strikeflow-reason"] == b"unwritable"
    assert dict(bars_dead[0].headers)["strikeflow-source"].startswith(f"{unique_name}-bars:".encode())
    assert ticks_dead[0].value == b"\x00not a ticks record"
    assert dict(ticks_dead[0].headers)["strikeflow-reason"] == b"undecodable"
    # the far-future tick alone, rejected before it touched any state; the rest of its record made bars
    assert dict(ticks_dead[1].headers)["strikeflow-reason"] == b"implausible-future" and len(ticks_dead) == 2
    underlying, rejected = decode_ticks(ticks_dead[1].value)
    assert underlying == "NIFTY" and rejected.dtype == hostile.dtype and rejected.tobytes() == hostile.tobytes()
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert log.count(".dlq: ") == 3 and "Traceback" not in log  # each logged once
