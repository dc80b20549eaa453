"""``strikeflow ingest``: Kite WebSocket(s) -> decoded, stamped tick batches -> Kafka ``ticks``.

Start-up: the instruments master (kiteconnect), the universe, the shards; the
universe is stored in PostgreSQL in the background (the worker prices from it;
a dead database never stops ticks from reaching Kafka), the topic is created
in the background, ``/metrics``, ``/health`` and ``/ready`` are served.
SIGTERM/SIGINT stop the readers, flush the producer, then exit.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import asyncpg
from aiohttp import web
from loguru import logger

from pipeline.feed.ingestor import Ingestor, IngestStats, plan_universe
from pipeline.feed.instruments import load_instruments
from pipeline.feed.kafka_topics import ensure_topics_eventually, ticks_topic
from pipeline.feed.kite_codec import warm_up_codec
from pipeline.feed.sharding import ShardingError
from pipeline.feed.tick_producer import TickProducer
from pipeline.runtime import metrics
from pipeline.runtime.backoff import retry_forever
from pipeline.runtime.health import Checks, LoopMonitor, liveness
from pipeline.runtime.kafka_auth import client_options
from pipeline.runtime.redaction import redact_url
from pipeline.runtime.settings import ConfigError, KiteAccount, Settings
from sinks.instrument_store import write_instruments
from sinks.migrate import schema_problem


async def _ticks_topic_problem(kafka_url: str, settings: Settings) -> ConfigError | None:
    """Create the ticks topic (retrying while Kafka is unreachable); the reason it cannot be used as
    configured (too few partitions, creation refused), or None."""
    try:
        await ensure_topics_eventually(kafka_url, [ticks_topic(settings)], client_options(settings))
    except ConfigError as exc:
        return exc
    return None


def _problem(task: asyncio.Task) -> ConfigError | None:
    return task.result() if task.done() and not task.cancelled() and task.exception() is None else None


def _stop_on_setup_error(task: asyncio.Task, ingestor: Ingestor) -> None:
    """Nothing the ingestor receives could be delivered as configured: stop, and say why (exit 2)."""
    if _problem(task) is not None:
        ingestor.stop()


def _raise_setup_error(task: asyncio.Task) -> None:
    problem = _problem(task)
    if problem is not None:
        raise problem


async def _serve_metrics(ingestor: Ingestor, host: str, port: int) -> web.AppRunner:
    """``/metrics``, ``/health`` (liveness: the loop runs, no needed task died) and ``/ready`` (every check
    ok: each connection connected and delivering data, the broker accepting sends, no task died); each
    check with ``ok``, ``age_s`` and a ``reason`` when not ok (``pipeline.runtime.health``)."""
    monitor = LoopMonitor(metrics.EVENT_LOOP_LAG)
    ingestor.tasks.supervise(monitor.run, "loop-monitor")

    async def metrics_view(request: web.Request) -> web.Response:
        return web.Response(body=metrics.metrics_text(), content_type="text/plain")

    async def health(request: web.Request) -> web.Response:
        alive, body = liveness(monitor, ingestor.tasks)
        return web.json_response(body, status=200 if alive else 503)

    async def ready(request: web.Request) -> web.Response:
        checks = Checks()
        ingestor.feed_checks(checks, ingestor.settings.ready_data_age_s)
        ingestor.tasks.into(checks)
        state = checks.report()
        state.update(connections=len(ingestor.connections), buffered_bytes=ingestor.producer.buffered_bytes,
                     connected=sum(1 for c in ingestor.connections if c.connected))
        return web.json_response(state, status=200 if state["ready"] else 503)

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics_view), web.get("/health", health), web.get("/ready", ready)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def _store_instruments(pg_dsn: str, schema: str, rows: list[dict]) -> None:
    """Upsert the universe into ``instruments`` (the worker prices from it), retried with backoff:
    a database that is down must not stop ticks from reaching Kafka."""
    def failed(exc: BaseException, delay: float) -> None:
        # the message of a connection error can carry the DSN: log the type and our advice only
        hint = str(exc) if isinstance(exc, RuntimeError) else type(exc).__name__
        logger.error("cannot store instruments in PostgreSQL {} ({}); retrying in {:.0f}s",
                     redact_url(pg_dsn), hint, delay)

    n = await retry_forever(lambda: write_instruments(pg_dsn, schema, rows),
                            retry_on=(OSError, asyncpg.PostgresError, RuntimeError), on_failure=failed)
    logger.info("stored {} instruments in {}.instruments", n, schema)


async def ingest_main(settings: Settings, *, kafka_url: str, pg_dsn: str | None, ws_url: str, api_url: str,
                      metrics_port: int) -> IngestStats:
    warm_up_codec()  # compile the frame kernel now, not on the first live frame
    accounts = list(settings.kite_accounts_all()) or [KiteAccount(api_key="strikeflow", access_token="simulator")]
    rows = await asyncio.to_thread(load_instruments, settings, accounts[0], api_url)
    universe = plan_universe(rows, settings, len(accounts))
    index, shards = universe.subscribed, universe.shards
    metrics.INSTRUMENTS_SUBSCRIBED.set(sum(len(shard.tokens) for shard in shards))
    metrics.INSTRUMENTS_BUDGET.set(len(accounts) * settings.kite_max_connections_per_key
                                   * settings.kite_max_tokens_per_connection)
    if len(index) == 0:
        raise ShardingError(f"no instruments of {', '.join(settings.underlyings)} in the instruments master")
    instruments_task = None
    if pg_dsn:
        listed = set(universe.listed.tokens.tolist())  # every listed strike: the rollups count coverage from it
        instruments_task = asyncio.create_task(
            _store_instruments(pg_dsn, settings.pg_schema, [r for r in rows if int(r["instrument_token"]) in listed]))
        # the worker prices from this table: give it a head start, but never wait on a dead database
        await asyncio.wait({instruments_task}, timeout=10)
    topic_task = asyncio.create_task(_ticks_topic_problem(kafka_url, settings))
    producer = TickProducer(kafka_url, settings.ticks_topic, settings.ingest_buffer_max_bytes,
                            compression=settings.kafka_compression, idempotence=settings.kafka_idempotence,
                            client_options=client_options(settings))
    await producer.start(topic_task)
    ingestor = Ingestor(settings, index, shards, accounts, producer, ws_url)
    ingestor.tasks.watch(producer.task, "tick-producer")
    ingestor.tasks.watch(topic_task, "ensure-topic", one_shot=True)
    topic_task.add_done_callback(lambda task: _stop_on_setup_error(task, ingestor))
    if instruments_task is not None:
        ingestor.tasks.watch(instruments_task, "store-instruments", one_shot=True)
    try:
        runner = await _serve_metrics(ingestor, settings.web_host, metrics_port)
    except OSError as exc:
        await producer.stop()
        raise ConfigError(f"configuration error: STRIKEFLOW_INGEST_METRICS_PORT: cannot listen on "
                          f"{settings.web_host}:{metrics_port} ({exc.strerror or exc}); choose another port") from None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, ingestor.stop)
    logger.info("ingesting {} instruments over {} connection(s) from {} into {} (metrics http://{}:{}/metrics)",
                len(index), len(shards), ws_url, redact_url(kafka_url), settings.web_host,
                runner.addresses[0][1] if runner.addresses else metrics_port)
    try:
        await ingestor.run()
        _raise_setup_error(topic_task)
    finally:
        topic_task.cancel()
        if instruments_task is not None:
            instruments_task.cancel()
        await producer.stop()
        await runner.cleanup()
        logger.info("ingest stopped: {} frames, {} ticks, {} heartbeats, {} reconnects, {} batches dropped",
                    ingestor.stats.frames, ingestor.stats.ticks, ingestor.stats.heartbeats,
                    ingestor.stats.reconnects, producer.dropped_batches)
    return ingestor.stats


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ws-url", help="WebSocket root (default: STRIKEFLOW_KITE_WS_URL, wss://ws.kite.trade)")
    parser.add_argument("--api-url", help="REST root for /instruments (default: STRIKEFLOW_KITE_API_URL)")
    parser.add_argument("--metrics-port", type=int, help="port of /metrics, /health, /ready (0 = any free)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.kafka_url:
        raise ConfigError("configuration error: STRIKEFLOW_KAFKA_URL: not set; ingest needs kafka://host:9092")
    if settings.pg_dsn:
        problem = asyncio.run(schema_problem(settings.pg_dsn.get_secret_value(), settings.pg_schema))
        if problem:
            raise ConfigError(problem)
    try:
        asyncio.run(ingest_main(
            settings,
            kafka_url=settings.kafka_url,
            pg_dsn=settings.pg_dsn.get_secret_value() if settings.pg_dsn else None,
            ws_url=args.ws_url or settings.kite_ws_url,
            api_url=args.api_url or settings.kite_api_url,
            metrics_port=args.metrics_port if args.metrics_port is not None else settings.ingest_metrics_port,
        ))
    except ShardingError as exc:
        raise ConfigError(f"configuration error: {exc}") from None
    return 0
