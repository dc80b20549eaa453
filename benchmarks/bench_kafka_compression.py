"""Producer compression on the ``ticks`` topic: bytes on the broker and producer CPU per tick, per codec.

Run: ``.venv/bin/python benchmarks/bench_kafka_compression.py [--seconds S] [--rate R]``.
A simulated market of ~10,000 instruments (NIFTY and BANKNIFTY, 5 expiries x 501 strikes x 2 sides,
liquidity falling off away from the money) trades ``--rate`` ticks per exchange second for ``--seconds``
exchange seconds; its ticks are cut into the ingestor's records (one per underlying per 50 ms, the
``strikeflow v2`` batch format) once, up front. Each codec then produces all of them to a fresh topic of a
private Apache Kafka broker (acks=all, idempotent, as the ingestor does) and is measured by the
producer's process CPU (``time.process_time``) and the bytes of the topic's log segments on disk. It prints
one line per codec and the ratios to ``none``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import tempfile
import time
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaProducer

from pipeline.commands.local_kafka import start_kafka
from pipeline.feed.ingestor import split_by_underlying
from pipeline.feed.kafka_topics import TopicSpec, ensure_topics
from pipeline.feed.stamping import ReceiveClock, ticks_from_kite
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.ticks import encode_ticks
from sim.market import (
    DEFAULT_UNDERLYINGS,
    Market,
    build_instruments,
    session_start_ts,
)

DAY = dt.date(2026, 11, 25)
CODECS = ("none", "lz4", "zstd", "gzip")
SLICES_PER_S = 20  # the ingestor's records: one per underlying per event-loop turn, ~50 ms at this load


def records(seconds: int, rate: int) -> tuple[list[tuple[bytes, bytes]], int]:
    """The ingestor's (key, value) records for ``seconds`` of the market at ``rate`` ticks/s; and the ticks."""
    specs = [DEFAULT_UNDERLYINGS["NIFTY"], DEFAULT_UNDERLYINGS["BANKNIFTY"]]
    rows = build_instruments(specs, DAY, n_expiries=5, strikes_each_side=250)
    index = InstrumentIndex.from_rows(rows)
    market = Market(rows, specs, session_start_ts(DAY), seed=3)
    spot = np.array([DEFAULT_UNDERLYINGS[u].spot for u in index.underlying])
    step = np.array([DEFAULT_UNDERLYINGS[u].strike_step for u in index.underlying])
    weight = 1 / (1 + np.where(np.isnan(index.strike), 0, np.abs(np.nan_to_num(index.strike) - spot) / step))
    weight /= weight.sum()
    rng, clock, start = np.random.default_rng(5), ReceiveClock(), session_start_ts(DAY)
    out: list[tuple[bytes, bytes]] = []
    n = 0
    for tick in range(seconds * SLICES_PER_S):
        now = start + tick / SLICES_PER_S
        market.advance(now)
        pos = market.positions(np.unique(index.tokens[rng.choice(len(index), size=rate // SLICES_PER_S, p=weight)]))
        market.trade(pos)
        ticks = ticks_from_kite(market.snapshot(pos), clock.stamp(len(pos), int(now * 1e6)))
        for underlying, batch in split_by_underlying(ticks, index)[0].items():
            out.append((underlying.encode(), encode_ticks(underlying, batch)))
            n += len(batch)
    return out, n


async def produce(url: str, topic: str, codec: str, batch: list[tuple[bytes, bytes]]) -> float:
    """Producer CPU seconds to deliver ``batch`` to ``topic`` with ``codec`` (acks=all, idempotent)."""
    producer = AIOKafkaProducer(bootstrap_servers=url.split("://", 1)[1], acks="all", enable_idempotence=True,
                                compression_type=None if codec == "none" else codec, linger_ms=2,
                                max_batch_size=1 << 20, max_request_size=8 << 20)
    await producer.start()
    try:
        cpu = time.process_time()
        futures = [await producer.send(topic, value, key=key) for key, value in batch]
        await asyncio.gather(*futures)
        return time.process_time() - cpu
    finally:
        await producer.stop()


def topic_bytes(data_dir: Path, topic: str) -> int:
    return sum(f.stat().st_size for f in (data_dir / "log").glob(f"{topic}-*/*.log"))


async def main(seconds: int, rate: int) -> None:
    batch, n = records(seconds, rate)
    raw = sum(len(v) for _, v in batch)
    print(f"{n:,} ticks in {len(batch):,} records, {raw / n:.1f} bytes per tick uncompressed "
          f"({seconds} s of ~10,000 instruments at {rate:,} ticks/s)")
    tmp = Path(tempfile.mkdtemp(prefix="strikeflow-compression-"))
    broker = start_kafka(tmp / "logs", data_dir=tmp / "data")
    try:
        results = {}
        for codec in CODECS:
            topic = f"ticks-{codec}"
            await ensure_topics(broker.url, [TopicSpec(topic, 4, 1)])
            cpu = await produce(broker.url, topic, codec, batch)
            time.sleep(1.0)  # the broker appends asynchronously to its segment files
            results[codec] = (topic_bytes(tmp / "data", topic), cpu)
        base_bytes, base_cpu = results["none"]
        for codec, (size, cpu) in results.items():
            print(f"{codec:>5}: {size / n:6.1f} bytes/tick on the broker ({size / base_bytes:5.2f}x none), "
                  f"producer CPU {cpu / n * 1e6:5.2f} µs/tick ({cpu / base_cpu:4.2f}x none)")
    finally:
        broker.process.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30, help="exchange seconds of the market")
    parser.add_argument("--rate", type=int, default=10_000, help="ticks per exchange second")
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.rate))
