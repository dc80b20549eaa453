"""``strikeflow demo``: the whole pipeline on embedded defaults, with live progress and a summary.

Starts whatever service is not configured (a broker: Apache Kafka or Tansu; PostgreSQL, Redis),
migrates, then runs three child processes — simulator, worker, ingest — as
``python -m pipeline.commands.cli <command>`` with the resolved service URLs in their
environment. Every child is stopped by its own PID, in order (ingest first so
the worker can drain), at the end, on Ctrl-C and on error.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import signal
import sys
import time
from pathlib import Path

from pipeline.commands.local_kafka import BROKER_KINDS, announce
from pipeline.commands.local_services import (
    LOOPBACK,
    LocalServices,
    ManagedProcess,
    ServiceStartError,
    ensure_services,
    free_port,
    spawn,
)
from pipeline.runtime.metrics import scrape
from pipeline.runtime.redaction import redact_url
from pipeline.runtime.settings import ConfigError, Settings
from sinks.demo_queries import (
    SchemaLock,
    check_bars_against_ticks,
    drop_schema,
    latest_volatility,
    table_counts,
)
from sinks.migrate import migrate

DEV_KAFKA_ENV = {
    # Faust joins a group on Tansu in about half the session timeout: keep it short in the demo.
    "STRIKEFLOW_KAFKA_SESSION_TIMEOUT_S": "6",
    "STRIKEFLOW_KAFKA_HEARTBEAT_INTERVAL_S": "1",
    "STRIKEFLOW_KAFKA_REBALANCE_TIMEOUT_S": "6",
}
# The simulated session runs --speed times faster than the clock, so its exchange time gets ahead of the
# receive clock: allow it (two days) instead of rejecting its ticks as implausible (STRIKEFLOW_MAX_CLOCK_SKEW_S).
SIMULATED_CLOCK_ENV = {"STRIKEFLOW_MAX_CLOCK_SKEW_S": str(2 * 86400)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=None, help="stop by itself after this many seconds")
    parser.add_argument("--speed", type=float, default=30.0, help="simulated exchange time per wall second")
    parser.add_argument("--rate", type=float, default=2000.0, help="simulated ticks per wall second")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-store-ticks", action="store_true", help="do not keep raw ticks in the ticks table")
    parser.add_argument("--broker", choices=BROKER_KINDS, default=None,
                        help="the local broker to start when STRIKEFLOW_KAFKA_URL is not set: Apache Kafka (Java "
                             "needed) or Tansu; default auto (Kafka when Java is here), or STRIKEFLOW_LOCAL_BROKER")
    parser.add_argument("--private-services", action="store_true",
                        help="start private PostgreSQL/Redis even when servers answer on the default local ports")


DEMO_SCHEMA = "strikeflow_demo"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace, settings: Settings) -> int:
    # Ctrl-C and SIGTERM (a supervisor, `timeout`) take the same path: stop the children in
    # order, print the summary. SIGINT is re-armed because a shell may start us with it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    if "pg_schema" not in settings.model_fields_set:
        # A demo's data is disposable: its own schema, emptied at start, never the user's `public`.
        settings = settings.model_copy(update={"pg_schema": DEMO_SCHEMA})
    log_dir = settings.data_dir / "logs" / time.strftime("%Y%m%d-%H%M%S")
    pg = settings.pg_dsn.get_secret_value() if settings.pg_dsn else None
    redis = settings.redis_url.get_secret_value() if settings.redis_url else None
    try:
        if settings.kafka_url is None:
            print(announce(args.broker), flush=True)
        services = ensure_services(settings.kafka_url, pg, redis, log_dir, reuse_local=not args.private_services,
                                   broker=args.broker)
    except ServiceStartError as exc:
        raise ConfigError(f"cannot start a local service: {exc}") from None
    children: list[ManagedProcess] = []
    lock = SchemaLock(services.pg_dsn, settings.pg_schema)
    try:
        if not lock.acquire():
            raise ConfigError(f"configuration error: STRIKEFLOW_PG_SCHEMA: another strikeflow demo is using schema "
                              f"{settings.pg_schema} on this database; wait for it, or set STRIKEFLOW_PG_SCHEMA")
        return _run(args, settings, services, children, log_dir)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping", file=sys.stderr)
        return 130
    finally:
        for child in children:  # ingest, worker, simulator: producers stop before consumers
            child.stop(timeout=15)
        lock.release()
        services.close()


def _run(args: argparse.Namespace, settings: Settings, services: LocalServices, children: list[ManagedProcess],
         log_dir: Path) -> int:
    print(f"services: Kafka {services.kafka_url} ({services.broker}), PostgreSQL {redact_url(services.pg_dsn)}, "
          f"Redis {redact_url(services.redis_url)}")
    for line in services.started():
        print(f"  started {line}")
    if settings.pg_schema == DEMO_SCHEMA:
        asyncio.run(drop_schema(services.pg_dsn, DEMO_SCHEMA))
    print(asyncio.run(migrate(services.pg_dsn, settings.pg_schema)))
    run_started = dt.datetime.now(dt.timezone.utc)
    store_ticks = not args.no_store_ticks
    urls = _start_children(args, settings, services, children, log_dir)
    try:
        _watch(args, children, urls)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping (Ctrl-C again to abandon the summary)", flush=True)
    _stop_in_order(children, urls["worker"], store_ticks)
    counts = asyncio.run(table_counts(services.pg_dsn, settings.pg_schema))
    _print_summary(counts, services, settings)
    _print_volatility(asyncio.run(latest_volatility(services.pg_dsn, settings.pg_schema)))
    if store_ticks:
        checked, differ = asyncio.run(check_bars_against_ticks(services.pg_dsn, settings.pg_schema, run_started))
        print(f"\ncheck: {checked:,} 1-minute bars of this run rebuilt from their raw ticks in SQL: {differ:,} differ")
        if differ:
            return 1
    return 0 if counts["bars_1m"] > 0 else 1


def _start_children(args: argparse.Namespace, settings: Settings, services: LocalServices,
                    children: list[ManagedProcess], log_dir: Path) -> dict[str, str]:
    """Simulator, worker, ingest (each added to ``children`` first, so it is stopped whatever happens);
    their URLs by name, printed."""
    python = [sys.executable, "-m", "pipeline.commands.cli"]
    env = {
        **DEV_KAFKA_ENV,
        "STRIKEFLOW_KAFKA_URL": services.kafka_url,
        "STRIKEFLOW_PG_DSN": services.pg_dsn,
        "STRIKEFLOW_REDIS_URL": services.redis_url,
        "STRIKEFLOW_PG_SCHEMA": settings.pg_schema,
        "STRIKEFLOW_STORE_TICKS": "false" if args.no_store_ticks else "true",
        # the volatility index rolls to the next two expiries near the first's expiry: three keep it on any day
        "STRIKEFLOW_EXPIRIES": str(max(settings.expiries, 3)),
        **SIMULATED_CLOCK_ENV,
    }
    cwd = Path.cwd()
    simulator = spawn("simulator", python + ["simulate", "--port", "0", "--speed", str(args.speed),
                                            "--rate", str(args.rate), "--seed", str(args.seed)], log_dir, env=env, cwd=cwd)
    children.insert(0, simulator)
    sim_port = int(simulator.wait_for_line(r"listening on ws://[\d.]+:(\d+)", 30).group(1))
    sim_root = f"http://{LOOPBACK}:{sim_port}"

    worker_port = free_port()
    worker = spawn("worker", python + ["worker"], log_dir, env={**env, "STRIKEFLOW_WEB_PORT": str(worker_port)}, cwd=cwd)
    children.insert(0, worker)
    ingest_port = free_port()
    ingest = spawn("ingest", python + ["ingest", "--ws-url", f"ws://{LOOPBACK}:{sim_port}", "--api-url", sim_root,
                                       "--metrics-port", str(ingest_port)], log_dir, env=env, cwd=cwd)
    children.insert(0, ingest)

    web = spawn("web", python + ["web", "--host", LOOPBACK, "--port", "0"], log_dir, env=env, cwd=cwd)
    children.insert(0, web)
    web_port = int(web.wait_for_line(r"dashboard http://[\d.]+:(\d+)/", 60).group(1))

    urls = {
        "simulator": f"ws://{LOOPBACK}:{sim_port} (instruments {sim_root}/instruments)",
        "ingest": f"http://{LOOPBACK}:{ingest_port}",
        "worker": f"http://{LOOPBACK}:{worker_port}",
        "dashboard": f"http://{LOOPBACK}:{web_port}/",
    }
    print(f"simulator  {urls['simulator']}")
    for name in ("ingest", "worker"):
        print(f"{name:<10} {urls[name]}/metrics  {urls[name]}/health  {urls[name]}/ready")
    print(f"dashboard {urls['dashboard']}", flush=True)
    print(f"logs in {log_dir}")
    print("Ctrl-C to stop" + (f" (stopping by itself after {args.seconds:.0f}s)" if args.seconds else ""))
    return urls


def _watch(args: argparse.Namespace, children: list[ManagedProcess], urls: dict[str, str]) -> None:
    """A progress line every 2 s until ``--seconds`` pass (or Ctrl-C); a child that dies ends the demo."""
    started = time.monotonic()
    while args.seconds is None or time.monotonic() - started < args.seconds:
        time.sleep(2.0)
        for child in children:
            if not child.alive():
                raise ServiceStartError(f"{child.name} exited unexpectedly:\n{child.log_tail()}")
        ing = scrape(f"{urls['ingest']}/metrics")
        wrk = scrape(f"{urls['worker']}/metrics")
        print(
            f"[{time.monotonic() - started:5.0f}s] ticks in {ing.get('strikeflow_ticks_ingested_total', 0):>9,.0f}"
            f" | processed {wrk.get('strikeflow_ticks_processed_total', 0):>9,.0f}"
            f" | bars closed {wrk.get('strikeflow_bars_emitted_total', 0):>7,.0f}"
            f" | rows written {wrk.get('strikeflow_rows_written_total', 0):>9,.0f}"
            f" | redis msgs {wrk.get('strikeflow_redis_messages_total', 0):>7,.0f}"
            f" | lag {wrk.get('strikeflow_process_lag_seconds', 0):.3f}s",
            flush=True,
        )


def _stop_in_order(children: list[ManagedProcess], worker_url: str, store_ticks: bool) -> None:
    """Ingest first (flushes to Kafka), let the worker drain what is in Kafka, then the rest."""
    by_name = {c.name: c for c in children}
    if "web" in by_name:
        by_name["web"].stop(timeout=5)
    by_name["ingest"].stop(timeout=15)
    _drain(worker_url, store_ticks)
    by_name["worker"].stop(timeout=20)
    by_name["simulator"].stop(timeout=5)


def _drain(worker_url: str, store_ticks: bool, timeout: float = 60.0) -> None:
    """Wait until the worker has processed every tick in Kafka (its count stops moving) and written
    every closed bar (and every tick, when stored), so the summary sees the whole run."""
    deadline = time.monotonic() + timeout
    last, steady_since = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        m = scrape(f"{worker_url}/metrics")
        processed = m.get("strikeflow_ticks_processed_total", 0.0)
        if processed != last:
            last, steady_since = processed, time.monotonic()
        bars_written = sum(v for k, v in m.items() if k.startswith("strikeflow_rows_written_total{table=bars_"))
        ticks_written = m.get("strikeflow_rows_written_total{table=ticks}", 0.0)
        written = bars_written >= m.get("strikeflow_bars_emitted_total", 0.0) and (
            not store_ticks or ticks_written >= processed)
        if time.monotonic() - steady_since >= 2.0 and written:
            return
        time.sleep(0.5)
    print(f"drain: the worker did not catch up within {timeout:.0f}s; the summary shows what was written",
          flush=True)


def _points(value: float | None) -> str:
    """An annualised vol (0.012) in volatility points ('+1.20'), or 'n/a'."""
    return "n/a" if value is None else f"{100 * value:+.2f}"


def _print_volatility(rows: list[dict]) -> None:
    """The live volatility index and the skew of each underlying, newest 1-minute bucket."""
    print("\nvolatility (newest 1-minute close; vol_index_1m, chain_bars_1m):")
    if not rows:
        print("  no volatility index yet (it needs two expiries with fresh two-sided quotes)")
    for r in rows:
        print(f"  {r['underlying']:<10} index {r['vix']:6.2f} (near {r['near_expiry']}, next {r['next_expiry']})  "
              f"ATM IV {_points(r['atm_iv']).lstrip('+')}  rr25 {_points(r['rr25'])}  bf25 {_points(r['bf25'])} pts")


def _print_summary(counts: dict[str, int], services: LocalServices, settings: Settings) -> None:
    schema = settings.pg_schema
    print("\nsummary")
    for table, n in counts.items():
        print(f"  {schema}.{table:<16} {n:>10,} rows")
    print("\ntry:")
    print(f"  psql '{redact_url(services.pg_dsn)}' -c \"SELECT i.tradingsymbol, b.bucket, b.open, b.high, b.low, "
          f"b.close, b.volume, b.oi, round(b.iv::numeric, 4) AS iv FROM {schema}.bars_1m b JOIN {schema}.instruments i "
          f"USING (instrument_token) ORDER BY b.bucket DESC, i.tradingsymbol LIMIT 20\"")
    host, port = re.match(r"redis://(?:[^@]*@)?([^:/]+):(\d+)", services.redis_url).groups()
    print(f"  redis-cli -h {host} -p {port} SUBSCRIBE ticks:NIFTY   (while the demo runs)")
    print(f"  redis-cli -h {host} -p {port} --scan --pattern 'snapshot:*'")
    private = sorted({p.name for p in services.processes} & {"postgres", "redis"})
    if private:
        print(f"  (the demo's private {' and '.join(private)} stopped with it: run these while it runs, or set "
              "STRIKEFLOW_PG_DSN / STRIKEFLOW_REDIS_URL to keep the data)")
