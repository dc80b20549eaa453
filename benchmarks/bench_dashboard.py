"""Benchmark: the dashboard's live path, Redis -> ``strikeflow web`` -> WebSocket clients, measured at the clients.

Run:  .venv/bin/python benchmarks/bench_dashboard.py [--pg DSN] [--redis URL] [--rate 2000] [--seconds 20]
      [--fast 4] [--slow 2] [--slow-read-s 2.0]

The dashboard app (``pipeline.commands.web.build_app``) serves on 127.0.0.1; the worker's own publisher
(``sinks.redis.publisher.RedisPublisher``) publishes batches of one NIFTY expiry's ticks (every option and
the index) at ``--rate`` ticks/s in 20 batches a second. ``--fast`` clients read every message as it comes;
``--slow`` clients read one message every ``--slow-read-s`` seconds (a browser tab in the background).
Printed per kind of client:

- latency: client receive time minus the newest ``recv_ts`` in the message (what a viewer sees of a tick
  that reached the ingestor), p50 / p99 / max;
- messages and ticks received, and ticks per message (the conflation at work);
- for the slow clients, the age of the newest tick in each message (never more than one read interval
  plus the pacing: conflation keeps the newest, it never replays a backlog).

And the server's RSS before and after (it must not grow with how far behind the slow clients are).
Figures depend on this machine (2 cores, shared and noisy): a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import time
import uuid

import aiohttp
import asyncpg
import numpy as np
import orjson
import redis.asyncio as aioredis
from aiohttp import web

from pipeline.commands.local_services import services_for_script
from pipeline.commands.web import FANOUT, build_app
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.kinds import InstrumentKind
from pipeline.records.ticks import PRICED_TICK_DTYPE
from pipeline.runtime.metrics import REGISTRY
from pipeline.runtime.percentiles import percentiles_ms
from pipeline.runtime.process_stats import ProcessSampler
from sim.market import DEFAULT_UNDERLYINGS, build_instruments
from sinks.migrate import migrate
from sinks.redis.channels import Channels
from sinks.redis.publisher import RedisPublisher

BATCHES_PER_S = 20


async def _client(url: str, read_every_s: float, stop: asyncio.Event, out: dict) -> None:
    latencies, ages, ticks, messages = [], [], 0, 0
    async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
        out["connected"] = True
        while not stop.is_set():
            try:
                msg = await asyncio.wait_for(ws.receive(), 1.0)
            except asyncio.TimeoutError:
                continue
            now_us = time.time() * 1e6
            if msg.type != aiohttp.WSMsgType.BINARY:
                break
            body = orjson.loads(msg.data)
            recv = [t["recv_ts"] for t in body["ticks"] if t.get("recv_ts")]
            messages += 1
            ticks += len(body["ticks"])
            if recv:
                latencies.append((now_us - max(recv)) / 1e3)
                ages.append((now_us - max(recv)) / 1e6)
            if read_every_s:
                await asyncio.sleep(read_every_s)
            await ws.send_str("ack")  # handled: the server may send the next one
    out.update(latencies=latencies, ages=ages, ticks=ticks, messages=messages)


async def _publish(publisher: RedisPublisher, index: InstrumentIndex, rate: int, seconds: float) -> int:
    per_batch = max(1, rate // BATCHES_PER_S)
    rng = np.random.default_rng(7)
    sent, start = 0, time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        pick = rng.integers(0, len(index), per_batch)
        ticks = np.zeros(per_batch, PRICED_TICK_DTYPE)
        ticks["instrument_token"] = index.tokens[pick]
        now = time.time()
        ticks["exchange_ts"] = int(now)
        ticks["recv_ts"] = int(now * 1e6) + np.arange(per_batch)
        ticks["last_price"] = 100 + rng.random(per_batch)
        ticks["oi"] = 1000
        sent += await publisher.publish_ticks("NIFTY", ticks, index)
        n += 1
        await asyncio.sleep(max(0.0, start + n / BATCHES_PER_S - time.monotonic()))
    return sent


def _summary(name: str, results: list[dict], seconds: float) -> None:
    lat = np.array([x for r in results for x in r["latencies"]])
    msgs = sum(r["messages"] for r in results)
    ticks = sum(r["ticks"] for r in results)
    if not len(lat):
        print(f"{name}: no messages")
        return
    p = percentiles_ms(lat)
    print(f"{name:>5} clients x{len(results)}: receive->client latency p50 {p['p50']} ms, p99 {p['p99']} ms, "
          f"max {p['max']} ms | {msgs / len(results) / seconds:.1f} msgs/s each, {ticks / max(msgs, 1):.1f} ticks/msg")


async def main(args: argparse.Namespace) -> None:
    schema = f"bench_web_{uuid.uuid4().hex[:8]}"
    prefix = f"{schema}:"
    await migrate(args.pg, schema)
    pool = await asyncpg.create_pool(args.pg, min_size=0, max_size=2)
    redis = aioredis.from_url(args.redis)
    rows = build_instruments([DEFAULT_UNDERLYINGS["NIFTY"]], dt.date(2026, 11, 25), n_expiries=1,
                             strikes_each_side=40, n_futures=1)
    index = InstrumentIndex.from_rows(rows)
    expiry = next(e for e, k in zip(index.expiry.tolist(), index.kind.tolist(), strict=True) if k == InstrumentKind.CALL)
    app = build_app(pool, redis, schema, None, Channels(prefix), update_interval_s=args.interval)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}/ws?underlying=NIFTY&expiry={expiry}"
    await asyncio.wait_for(app[FANOUT].subscribed.wait(), 10)
    stop = asyncio.Event()
    fast = [{} for _ in range(args.fast)]
    slow = [{} for _ in range(args.slow)]
    tasks = [asyncio.create_task(_client(url, 0.0, stop, r)) for r in fast]
    tasks += [asyncio.create_task(_client(url, args.slow_read_s, stop, r)) for r in slow]
    await asyncio.sleep(1.0)
    sampler = ProcessSampler(os.getpid())
    rss0 = sampler.sample(time.time())
    sent = await _publish(RedisPublisher(redis, prefix=prefix), index, args.rate, args.seconds)
    rss1 = sampler.sample(time.time())
    stop.set()
    await asyncio.gather(*tasks)
    print(f"published {sent:,} ticks in {args.seconds:.0f} s ({sent / args.seconds:,.0f}/s) of {len(index)} instruments; "
          f"server pacing {args.interval * 1000:.0f} ms")
    _summary("fast", fast, args.seconds)
    _summary("slow", slow, args.seconds)
    ages = [a for r in slow for a in r["ages"]]
    if ages:
        print(f"slow clients: newest tick in each message at most {max(ages):.2f} s old "
              f"(reading every {args.slow_read_s:.1f} s)")
    print(f"server and clients RSS {rss0:.0f} MB -> {rss1:.0f} MB (one process); updates conflated before a "
          f"client read them: {REGISTRY.get_sample_value('strikeflow_dashboard_conflated_total'):,.0f}")
    await runner.cleanup()
    await redis.aclose()
    async with pool.acquire() as conn:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", help="PostgreSQL DSN (default: STRIKEFLOW_PG_DSN, else a private server)")
    parser.add_argument("--redis", help="Redis URL (default: STRIKEFLOW_REDIS_URL, else a private server)")
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--fast", type=int, default=4)
    parser.add_argument("--slow", type=int, default=2)
    parser.add_argument("--slow-read-s", type=float, default=2.0)
    parser.add_argument("--interval", type=float, default=0.25, help="the server's pacing (dashboard_update_interval_s)")
    args = parser.parse_args()
    with services_for_script(args.pg, args.redis) as services:
        args.pg, args.redis = services.pg_dsn, services.redis_url
        asyncio.run(main(args))
