"""One ``strikeflow bench`` run: start the pipeline, watch it from outside, measure phases, drain, report.

Phases: start (services, schema, simulator, workers, ingestor) -> wait for the
first tick on Redis -> warm-up -> one measured phase (or, with ``--find-max``,
one per rate step) -> drain (stop the ingestor, let the workers finish what is
in Kafka and write every closed bar) -> stop. Every child is stopped by PID in
:meth:`BenchRun.close`, also after Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pipeline.commands.bench_report import (
    Phase,
    Totals,
    kept_up,
    phase_figures,
    report_of,
)
from pipeline.commands.demo import DEV_KAFKA_ENV
from pipeline.commands.local_kafka import announce
from pipeline.commands.local_services import (
    LOOPBACK,
    LocalServices,
    ManagedProcess,
    ensure_services,
    free_port,
    spawn,
)
from pipeline.feed.kafka_topics import consumer_lag
from pipeline.runtime.kafka_auth import client_options
from pipeline.runtime.metrics import scrape
from pipeline.runtime.process_stats import ProcessSampler
from pipeline.runtime.settings import Settings
from sinks.bar_watch import BarWatch, missing_bars
from sinks.demo_queries import check_bars_against_ticks, drop_schema
from sinks.migrate import migrate
from sinks.redis.tick_watch import TickWatch

FIRST_TICK_TIMEOUT_S = 90.0
DRAIN_TIMEOUT_S = 90.0
CATCH_UP_S = 60.0


@dataclass(frozen=True)
class Universe:
    underlyings: tuple[str, ...]
    expiries: int
    strikes: int  # listed strikes each side of the money


def universe_for(n_instruments: int) -> Universe:
    """Underlyings, expiries and strikes each side giving about ``n_instruments`` instruments.

    Per underlying: its index, up to two futures and ``expiries x (2 strikes + 1) x 2`` options.
    Below 300 instruments only NIFTY and BANKNIFTY are used, so each still has a chain.
    """
    underlyings = ("NIFTY", "BANKNIFTY", "FINNIFTY", "MIDCPNIFTY", "SENSEX") if n_instruments >= 300 \
        else ("NIFTY", "BANKNIFTY")
    expiries = 4 if n_instruments >= 300 else 2
    per_chain = n_instruments / len(underlyings) - 3  # index and futures
    strikes = max(1, min(200, round((per_chain / (2 * expiries) - 1) / 2)))
    return Universe(underlyings, expiries, strikes)


def accounts_for(n_instruments: int, max_tokens: int = 3000, per_key: int = 3) -> int:
    """Kite accounts (api keys) the universe needs: one connection per ``max_tokens`` instruments (plus room
    for each shard's index and futures), ``per_key`` connections per key."""
    connections = math.ceil(n_instruments * 1.02 / max_tokens)
    return max(1, math.ceil(connections / per_key))


class BenchRun:
    def __init__(self, args: argparse.Namespace, settings: Settings, universe: Universe, log_dir: Path,
                 out: TextIO) -> None:
        self.args, self.settings, self.universe, self.log_dir, self.out = args, settings, universe, log_dir, out
        self.services: LocalServices | None = None
        self.children: list[ManagedProcess] = []
        self.urls: dict[str, str] = {}
        self.samplers: dict[str, ProcessSampler] = {"bench": ProcessSampler(os.getpid())}
        self.stop = asyncio.Event()
        self._app_id = f"bench{int(time.time())}"  # fresh topics and consumer group per run
        self._ticks_topic = f"{self._app_id}-ticks"

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=self.out, flush=True)

    # -- start ------------------------------------------------------------------------------

    def _start_services(self) -> LocalServices:
        s = self.settings
        pg = s.pg_dsn.get_secret_value() if s.pg_dsn else None
        redis = s.redis_url.get_secret_value() if s.redis_url else None
        if s.kafka_url is None:
            self.say(announce(self.args.broker))
        self.services = ensure_services(s.kafka_url, pg, redis, self.log_dir, broker=self.args.broker)
        for proc in self.services.processes:
            self.samplers[proc.name] = ProcessSampler(proc.pid)
        return self.services

    def _env(self, services: LocalServices, app_id: str) -> dict[str, str]:
        u = self.universe
        accounts = [{"api_key": f"bench{i + 1}", "access_token": "simulator"}
                    for i in range(accounts_for(self.args.instruments))]
        return {**DEV_KAFKA_ENV, "STRIKEFLOW_KAFKA_URL": services.kafka_url, "STRIKEFLOW_PG_DSN": services.pg_dsn,
                "STRIKEFLOW_REDIS_URL": services.redis_url, "STRIKEFLOW_PG_SCHEMA": self.settings.pg_schema,
                "STRIKEFLOW_APP_ID": app_id, "STRIKEFLOW_TICKS_TOPIC": f"{app_id}-ticks",
                "STRIKEFLOW_BARS_TOPIC": f"{app_id}-bars", "STRIKEFLOW_TOPIC_PARTITIONS": str(self.args.partitions),
                "STRIKEFLOW_STORE_TICKS": "true" if self.args.store_ticks else "false",
                "STRIKEFLOW_UNDERLYINGS": json.dumps(list(u.underlyings)), "STRIKEFLOW_EXPIRIES": str(u.expiries),
                "STRIKEFLOW_STRIKES_AROUND_ATM": str(u.strikes), "STRIKEFLOW_KITE_ACCOUNTS": json.dumps(accounts)}

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> ManagedProcess:
        proc = spawn(name, [sys.executable, "-m", "pipeline.commands.cli", *argv], self.log_dir, env=env)
        self.children.insert(0, proc)  # stopped in reverse start order: ingest, workers, simulator
        self.samplers[name] = ProcessSampler(proc.pid)
        return proc

    def _start_pipeline(self, services: LocalServices, env: dict[str, str]) -> None:
        u = self.universe
        start = dt.datetime.now(dt.timezone.utc).isoformat()  # exchange time = wall time (bar latency), so the
        # market trades around the clock rather than only in the session hours of the day it happens to be
        sim = self._spawn("simulator", ["simulate", "--port", "0", "--speed", "1", "--rate", str(self.args.rate),
                                        "--start", start, "--around-the-clock", "--underlyings",
                                        ",".join(u.underlyings), "--expiries", str(u.expiries),
                                        "--strikes", str(u.strikes)], env)
        port = int(sim.wait_for_line(r"listening on ws://[\d.]+:(\d+)", 60).group(1))
        self.urls["simulator"] = f"http://{LOOPBACK}:{port}"
        for i in range(self.args.workers):
            web = free_port()
            name = f"worker{i + 1}"
            self._spawn(name, ["worker"], {**env, "STRIKEFLOW_WEB_PORT": str(web),
                                           "STRIKEFLOW_DATA_DIR": str(self.log_dir / name)})
            self.urls[name] = f"http://{LOOPBACK}:{web}"
        metrics_port = free_port()
        self._spawn("ingest", ["ingest", "--ws-url", f"ws://{LOOPBACK}:{port}", "--api-url",
                               self.urls["simulator"], "--metrics-port", str(metrics_port)], env)
        self.urls["ingest"] = f"http://{LOOPBACK}:{metrics_port}"

    # -- counters ---------------------------------------------------------------------------

    def _check_children(self) -> None:
        for child in self.children:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited unexpectedly:\n{child.log_tail()}")

    async def totals(self, watch: TickWatch, bars: BarWatch) -> Totals:
        """Every counter the figures need, read now (sample RSS/CPU too)."""
        now = time.time()
        for sampler in self.samplers.values():
            sampler.sample(now)
        sim = await asyncio.to_thread(_json, f"{self.urls['simulator']}/_sim/state")
        ingest = await asyncio.to_thread(scrape, f"{self.urls['ingest']}/metrics") if "ingest" in self.urls else {}
        workers = [await asyncio.to_thread(scrape, f"{url}/metrics")
                   for name, url in self.urls.items() if name.startswith("worker")]

        def total(name: str) -> float:
            return sum(w.get(name, 0.0) for w in workers)

        return Totals(
            at=now, offered=float(sim.get("ticks_sent", 0)), ingested=ingest.get("strikeflow_ticks_ingested_total", 0.0),
            processed=total("strikeflow_ticks_processed_total"), received=float(watch.ticks),
            published=total("strikeflow_redis_ticks_published_total"),
            filtered=total("strikeflow_redis_stale_ticks_total") + total("strikeflow_redis_not_newer_ticks_total")
            + total("strikeflow_redis_conflated_ticks_total"),
            bars_emitted=total("strikeflow_bars_emitted_total"), bar_rows=float(bars.rows_seen),
            ticks_written=total("strikeflow_rows_written_total{table=ticks}"),
            subscribed=len(sim.get("subscribed_tokens", ())))

    def progress(self, t: Totals, last: Totals, latency_p99: float | None) -> None:
        dt_s = max(t.at - last.at, 1e-9)
        p99 = "-" if latency_p99 is None else f"{latency_p99:.0f}ms"
        self.say(f"offered {(t.offered - last.offered) / dt_s:>8,.0f}/s | ingested {(t.ingested - last.ingested) / dt_s:>8,.0f}/s"
                 f" | processed {(t.processed - last.processed) / dt_s:>8,.0f}/s | on Redis {(t.received - last.received) / dt_s:>8,.0f}/s"
                 f" | behind {t.ingested - t.processed:>8,.0f} ticks | bars {t.bar_rows:>8,.0f} | p99 {p99}")

    # -- phases -----------------------------------------------------------------------------

    async def measure(self, watch: TickWatch, bars: BarWatch, seconds: float, rate: float) -> Phase:
        """One measured phase at ``rate``: latencies collected only inside it; progress every 2 s."""
        del watch.latencies_ms[:]
        del bars.latencies_ms[:]
        watch.measuring = bars.measuring = True
        first = last = await self.totals(watch, bars)
        end = first.at + seconds
        while time.time() < end:
            await asyncio.sleep(min(2.0, max(end - time.time(), 0.05)))
            self._check_children()
            now = await self.totals(watch, bars)
            self.progress(now, last, watch.latency_summary()["p99"])
            last = now
        watch.measuring = bars.measuring = False
        lag = await consumer_lag(self.services.kafka_url, self._app_id, [self._ticks_topic],
                                 client_options(self.settings))
        return Phase(rate=rate, first=first, last=last, latency_ms=watch.latency_summary(),
                     bar_latencies_ms=bars.latencies().copy(), lag_records=sum(lag.values()),
                     cpu={n: s.cpu_percent(first.at, last.at) for n, s in self.samplers.items()})

    async def _wait_first_tick(self, watch: TickWatch) -> None:
        deadline = time.monotonic() + FIRST_TICK_TIMEOUT_S
        while watch.ticks == 0:
            self._check_children()
            if time.monotonic() > deadline:
                raise RuntimeError(f"no tick reached Redis within {FIRST_TICK_TIMEOUT_S:.0f}s; logs in {self.log_dir}")
            await asyncio.sleep(0.2)

    async def _caught_up(self, watch: TickWatch, bars: BarWatch) -> None:
        """Measure from a steady state: wait (up to CATCH_UP_S) until the workers are less than a second of
        input behind the ingestor (a start-up backlog would otherwise count as latency)."""
        deadline = time.monotonic() + CATCH_UP_S
        while time.monotonic() < deadline:
            t = await self.totals(watch, bars)
            if t.ingested - t.processed <= max(self.args.rate, 1000):
                return
            self.say(f"waiting for the workers to catch up: {t.ingested - t.processed:,.0f} ticks behind")
            await asyncio.sleep(2.0)
        self.say(f"the workers did not catch up within {CATCH_UP_S:.0f}s: measuring anyway")

    async def _drain(self, watch: TickWatch, bars: BarWatch) -> Totals:
        """Silence the market, read the ingestor's final count, stop it; then wait until the workers have
        processed and published all it produced and the bar rows stop growing."""
        await asyncio.to_thread(_post, f"{self.urls['simulator']}/_sim/fault/stall?seconds=3600")
        last = await self._settled(watch, bars, lambda t: (t.ingested,), need=2)
        produced = last.ingested
        await asyncio.to_thread({c.name: c for c in self.children}["ingest"].stop, 15)
        del self.urls["ingest"]

        def done(t: Totals) -> tuple:
            return (t.processed >= produced, t.processed, t.received, t.bar_rows)

        last = await self._settled(watch, bars, done, need=4)
        last.ingested = produced
        return last

    async def _settled(self, watch: TickWatch, bars: BarWatch, key: Callable[[Totals], tuple],
                       need: int) -> Totals:
        """Read totals every half second until ``key`` has not changed ``need`` times in a row (and, when
        its first item is a bool, that is True), or until DRAIN_TIMEOUT_S (said); the last totals."""
        deadline, steady, previous = time.monotonic() + DRAIN_TIMEOUT_S, 0, None
        while True:
            await asyncio.sleep(0.5)
            t = await self.totals(watch, bars)
            k = key(t)
            steady = steady + 1 if k == previous and k[0] is not False else 0
            previous = k
            if steady >= need:
                return t
            if time.monotonic() > deadline:
                self.say("drain: the pipeline did not settle in time; the figures show what was reached")
                return t

    async def main(self) -> dict:
        services = await asyncio.to_thread(self._start_services)
        await drop_schema(services.pg_dsn, self.settings.pg_schema)
        await migrate(services.pg_dsn, self.settings.pg_schema)
        started = time.time()
        watch = TickWatch(services.redis_url)
        bars = BarWatch(services.pg_dsn, self.settings.pg_schema, started - 900)  # the first buckets start earlier
        tasks = [asyncio.create_task(watch.run(self.stop)), asyncio.create_task(bars.run(self.stop))]
        await watch.subscribed.wait()
        self._start_pipeline(services, self._env(services, self._app_id))
        self.say(f"{self.universe} at {self.args.rate:,.0f} ticks/s, {self.args.workers} worker(s); "
                 f"logs in {self.log_dir}")
        await self._wait_first_tick(watch)
        self.say(f"first tick on Redis after {time.time() - started:.1f}s; warming up {self.args.warmup:.0f}s")
        await asyncio.sleep(self.args.warmup)
        await self._caught_up(watch, bars)
        phases = await self._phases(watch, bars)
        soak_from = phases[0].first.at
        drained = await self._drain(watch, bars)
        self.stop.set()
        await asyncio.gather(*tasks)
        lost_bars = await missing_bars(services.pg_dsn, self.settings.pg_schema, watch.bar_keys) \
            if watch.bar_keys else 0
        checked = None
        if self.args.store_ticks:
            checked = await check_bars_against_ticks(services.pg_dsn, self.settings.pg_schema,
                                                     dt.datetime.fromtimestamp(started, dt.timezone.utc))
        report = report_of(self.args, self.universe, phases, drained, lost_bars, len(watch.bar_keys),
                           watch.backwards, self.samplers, soak_from, checked)
        return {"broker": services.broker, **report}

    async def _phases(self, watch: TickWatch, bars: BarWatch) -> list[Phase]:
        if not self.args.find_max:
            return [await self.measure(watch, bars, self.args.seconds, self.args.rate)]
        phases, rate = [], self.args.rate
        while True:
            phase = await self.measure(watch, bars, self.args.seconds, rate)
            phases.append(phase)
            ok, why = kept_up(phase_figures(phase), self.args.p99_bound_ms)
            self.say(f"step {rate:,.0f} ticks/s: {'kept up' if ok else 'did not keep up: ' + why}")
            if not ok:
                return phases
            rate *= self.args.step_factor
            await asyncio.to_thread(_post, f"{self.urls['simulator']}/_sim/rate?tps={rate:.0f}")
            await asyncio.sleep(5.0)  # let the new rate settle before measuring it

    def close(self) -> None:
        for child in self.children:
            child.stop(timeout=20 if child.name.startswith("worker") else 10)
        if self.services is not None:
            self.services.close()


def _json(url: str) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return {}


def _post(url: str) -> None:
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5):
        pass
