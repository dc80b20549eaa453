"""Recovery from the outside: SIGKILL one of two workers under load, watch Redis and the database.

Run: ``.venv/bin/python benchmarks/bench_recovery.py [--rate 4000] [--seconds 40]``. Starts (or uses the
configured) broker, PostgreSQL and Redis, the simulator, the ingestor and two workers in one group
(six partitions, so NIFTY and BANKNIFTY land on different ones), with the demo's 6 s session
timeout. A redis-py subscriber on ``ticks:*`` records, per channel, when a *fresh* tick arrives
(received less than 1 s before) and, per instrument, any tick not newer than one already
published (a channel going back in time). After a warm-up the worker owning NIFTY's partition
is SIGKILLed; later a replacement is started cold. Printed: seconds from the kill until every
channel has fresh ticks again, the longest gap without fresh ticks per channel, ticks that went
back in time, seconds from the replacement's ``/ready`` to fresh ticks, the committed lag of the
ticks topic at the end, and the demo's SQL check of every 1-minute bar against the raw ticks.
Everything it started is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.commands.demo import DEV_KAFKA_ENV
from pipeline.commands.local_services import LOOPBACK, ensure_services, free_port, spawn
from pipeline.feed.kafka_topics import consumer_lag
from pipeline.runtime.metrics import scrape
from sinks.demo_queries import check_bars_against_ticks, drop_schema
from sinks.migrate import migrate
from sinks.redis.tick_watch import TickWatch

SCHEMA = "strikeflow_recovery"
PARTITIONS = 6  # NIFTY -> 3, BANKNIFTY -> 1 (aiokafka's murmur2)


def _spread(values: list[float]) -> dict | None:
    """min / median / max of ``values`` (None when empty)."""
    if not values:
        return None
    values = sorted(values)
    return {"min": round(values[0], 2), "median": round(values[len(values) // 2], 2), "max": round(values[-1], 2)}


def _ready(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"{url}/ready", timeout=1) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 503: not ready, but the body says why
        return json.loads(exc.read() or b"{}")
    except (OSError, ValueError):  # not up yet
        return None


async def _trace(worker_url: str, since: float, seconds: float, show: bool) -> None:
    """Wait ``seconds``; with ``show``, print the survivor's processed ticks per half second meanwhile."""
    last, end = None, time.time() + seconds
    while time.time() < end:
        await asyncio.sleep(0.5)
        if not show:
            continue
        processed = (await asyncio.to_thread(scrape, f"{worker_url}/metrics")).get("strikeflow_ticks_processed_total")
        if processed is not None:
            rate = "" if last is None else f"{(processed - last) * 2:>9,.0f} ticks/s"
            print(f"  +{time.time() - since:5.1f}s survivor processed {processed:>10,.0f} {rate}", flush=True)
            last = processed


async def _main(args: argparse.Namespace) -> None:
    log_dir = Path(".strikeflow/bench-recovery") / time.strftime("%Y%m%d-%H%M%S")
    services = ensure_services(os.environ.get("STRIKEFLOW_KAFKA_URL"), os.environ.get("STRIKEFLOW_PG_DSN"),
                               os.environ.get("STRIKEFLOW_REDIS_URL"), log_dir)
    children = []
    stop = asyncio.Event()
    try:
        await drop_schema(services.pg_dsn, SCHEMA)
        await migrate(services.pg_dsn, SCHEMA)
        app_id = f"recovery{int(time.time())}"
        env = {**DEV_KAFKA_ENV, "STRIKEFLOW_KAFKA_URL": services.kafka_url, "STRIKEFLOW_PG_DSN": services.pg_dsn,
               "STRIKEFLOW_REDIS_URL": services.redis_url, "STRIKEFLOW_PG_SCHEMA": SCHEMA, "STRIKEFLOW_APP_ID": app_id,
               "STRIKEFLOW_TICKS_TOPIC": f"{app_id}-ticks", "STRIKEFLOW_BARS_TOPIC": f"{app_id}-bars",
               "STRIKEFLOW_TOPIC_PARTITIONS": str(PARTITIONS),
               "STRIKEFLOW_STORE_TICKS": "false" if args.no_store_ticks else "true"}
        python = [sys.executable, "-m", "pipeline.commands.cli"]
        sim = spawn("simulator", python + ["simulate", "--port", "0", "--speed", "1", "--rate", str(args.rate)],
                    log_dir, env=env)
        children.append(sim)
        port = int(sim.wait_for_line(r"listening on ws://[\d.]+:(\d+)", 30).group(1))
        workers = {}

        def start_worker(name: str) -> str:
            web = free_port()
            workers[name] = (spawn(name, python + ["worker"], log_dir, env={**env, "STRIKEFLOW_WEB_PORT": str(web),
                                   "STRIKEFLOW_DATA_DIR": str(log_dir / name)}), f"http://{LOOPBACK}:{web}")
            children.append(workers[name][0])
            return workers[name][1]

        start_worker("worker1")
        start_worker("worker2")
        started = dt.datetime.now(dt.timezone.utc)
        children.append(spawn("ingest", python + ["ingest", "--ws-url", f"ws://{LOOPBACK}:{port}", "--api-url",
                                                  f"http://{LOOPBACK}:{port}", "--metrics-port", str(free_port())],
                              log_dir, env=env))
        watch = TickWatch(services.redis_url)
        watcher = asyncio.create_task(watch.run(stop))
        await asyncio.sleep(args.warmup)
        victim = next((n for n, (_, url) in workers.items()
                       if f"{app_id}-ticks:3" in ((_ready(url) or {}).get("assignment") or [])), "worker1")
        kill_at = time.time()
        os.killpg(workers[victim][0].pid, signal.SIGKILL)
        print(f"{time.strftime('%H:%M:%S')} killed {victim} (it owned NIFTY's partition); watching", flush=True)
        survivor = next(url for n, (_, url) in workers.items() if n != victim)
        await _trace(survivor, kill_at, args.seconds / 2, args.trace)
        join_at = time.time()
        replacement = start_worker("worker3")
        while not (_ready(replacement) or {}).get("ready"):
            await asyncio.sleep(0.2)
        ready_at = time.time()
        print(f"{time.strftime('%H:%M:%S')} the replacement is ready", flush=True)
        await asyncio.sleep(args.seconds / 2)
        end = time.time()
        lag = await consumer_lag(services.kafka_url, app_id, [env["STRIKEFLOW_TICKS_TOPIC"]])
        stop.set()
        await watcher
        for proc in reversed(children):  # ingest first, then the workers drain
            proc.stop(timeout=15)
        checked, differ = (None, None) if args.no_store_ticks else await check_bars_against_ticks(
            services.pg_dsn, SCHEMA, started)
        back = watch.back_after(kill_at)
        print(json.dumps({
            "rate": args.rate, "redis_messages": watch.messages,
            "fresh_on_every_channel_after_kill_s": None if back is None else round(back, 1),
            "longest_gap_without_fresh_ticks_s": {c: round(g, 1) for c, g in watch.longest_gap(kill_at, join_at).items()},
            "longest_gap_after_a_worker_joins_s": {c: round(g, 1) for c, g in watch.longest_gap(join_at, end).items()},
            "ticks_back_in_time": watch.backwards, "of_which_repeats": watch.repeats,
            "back_in_time_by_channel": watch.backwards_by_channel,
            "back_in_time_when_s_after_kill": _spread([t - kill_at for t, _ in watch.backwards_at]),
            "back_in_time_by_s": _spread([d for _, d in watch.backwards_at]),
            "join_s_after_kill": round(join_at - kill_at, 1),
            "replacement_ready_to_fresh_s": None if watch.back_after(ready_at) is None
            else round(watch.back_after(ready_at), 1),
            "committed_lag_records_at_end": lag, "bars_1m_checked": checked, "bars_1m_differ": differ,
        }, indent=1))
    finally:
        stop.set()
        for proc in reversed(children):
            proc.stop(timeout=5)
        services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=4000, help="simulated ticks per second")
    parser.add_argument("--warmup", type=float, default=25.0)
    parser.add_argument("--seconds", type=float, default=40.0, help="watched after the kill")
    parser.add_argument("--trace", action="store_true", help="print the survivor's processing rate after the kill")
    parser.add_argument("--no-store-ticks", action="store_true",
                        help="workers do not store raw ticks (and the SQL bar check is skipped)")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
