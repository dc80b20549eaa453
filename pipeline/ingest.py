"""``strikeflow ingest``: Kite WebSocket(s) -> decoded, stamped tick batches -> Kafka ``ticks``.

Asyncio-native (aiohttp WebSocket client + our vectorised codec; no Twisted
reactor in the hot path). Per connection:

- connect to ``<ws_url>?api_key=..&access_token=..``, subscribe its shard's
  tokens and set them to full mode;
- every binary message: 1-byte heartbeats are counted, frames are decoded by
  :class:`pipeline.kite_codec.FrameDecoder` (a bad frame is counted and
  skipped, never raised), stamped with strictly increasing receive times,
  split by underlying and offered to the producer (never awaited per send);
- no message at all for ``kite_silence_timeout_s`` = dead socket: reconnect;
- reconnects use exponential backoff (1 s, x2, cap 30 s) with +-20 % jitter,
  reset after a successful handshake; the gap is logged and counted;
- HTTP 403 on the upgrade = rejected credentials: the shard fails over to
  another configured account when one has a free slot, and the log says so.

SIGTERM/SIGINT stop the readers, flush the producer, then exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import asyncpg
import numpy as np
from aiohttp import web
from loguru import logger

from pipeline import metrics
from pipeline.backoff import retry_forever
from pipeline.instrument_index import KIND_CALL, KIND_FUT, KIND_INDEX, KIND_PUT, InstrumentIndex
from pipeline.kite_codec import MODE_FULL, FrameDecoder
from pipeline.settings import KiteAccount, Settings, redact_url
from pipeline.sharding import Shard, ShardingError, plan_shards, reassign
from pipeline.tick_batch import encode_ticks, ticks_from_kite
from pipeline.tick_producer import TickProducer, ensure_topic_eventually

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
INSTRUMENT_ATTEMPTS = 5


class ReceiveClock:
    """Receive timestamps in epoch microseconds, strictly increasing across all connections."""

    def __init__(self) -> None:
        self._last = 0

    def stamp(self, n: int, now_us: int) -> np.ndarray:
        start = max(now_us, self._last + 1)
        self._last = start + n - 1
        return np.arange(start, start + n, dtype=np.int64)


def split_by_underlying(ticks: np.ndarray, index: InstrumentIndex) -> tuple[dict[str, np.ndarray], int]:
    """Group a frame's ticks by underlying (order kept); also returns how many tokens were unknown."""
    pos = index.positions(ticks["instrument_token"])
    known = pos >= 0
    names = index.underlying[pos[known]]
    kept = ticks[known]
    groups = {str(u): kept[names == u] for u in np.unique(names)} if len(kept) else {}
    return groups, int((~known).sum())


@dataclass
class IngestStats:
    frames: int = 0
    ticks: int = 0
    heartbeats: int = 0
    reconnects: int = 0
    unknown_tokens: int = 0
    partial_packets: int = 0
    gap_seconds: float = 0.0


class AccountRejected(Exception):
    """Kite refused the account: HTTP 403 (bad/expired access token) or 429 (its connection limit)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status

    @property
    def reason(self) -> str:
        return ("bad or expired access token (HTTP 403); fix KITE_ACCESS_TOKEN" if self.status == 403
                else f"connection limit reached (HTTP {self.status}); add an account or lower the universe")


class Connection:
    """One WebSocket for one shard, reconnecting forever until ``stop``."""

    def __init__(self, ingestor: Ingestor, shard: Shard) -> None:
        self.ingestor = ingestor
        self.shard = shard
        self.name = shard.name
        self.connected_once = False

    def url(self, account: KiteAccount) -> str:
        base = self.ingestor.ws_url
        return f"{base}?api_key={account.api_key}&access_token={account.access_token.get_secret_value()}"

    async def run(self) -> None:
        ing = self.ingestor
        delay = BACKOFF_START_S
        down_since: float | None = None
        while not ing.stopping.is_set():
            account = ing.accounts[self.shard.account]
            try:
                await self._session(account, down_since)
                delay = BACKOFF_START_S  # the session got through the handshake
            except AccountRejected as exc:
                if ing.fail_over(self, exc.reason):
                    continue
                logger.error("Kite refused api_key {} ({}) and no other account has a free connection: retrying",
                             account.api_key, exc.reason)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                logger.warning("connection {}: {} ({})", self.name, type(exc).__name__, exc)
            metrics.WS_CONNECTED.labels(self.name).set(0)
            if ing.stopping.is_set():
                break
            down_since = down_since or time.monotonic()
            sleep = delay * random.uniform(0.8, 1.2)
            delay = min(delay * 2, BACKOFF_MAX_S)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ing.stopping.wait(), sleep)

    async def _session(self, account: KiteAccount, down_since: float | None) -> None:
        ing = self.ingestor
        try:
            ws = await ing.http.ws_connect(self.url(account), heartbeat=None, autoping=True, max_msg_size=0,
                                           headers={"X-Kite-Version": "3"})
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (403, 429):
                raise AccountRejected(exc.status) from None
            # the URL carries the access token: never log the exception text itself
            raise aiohttp.ClientError(f"WebSocket upgrade refused with HTTP {exc.status}") from None
        async with ws:
            if down_since is not None:
                gap = time.monotonic() - down_since
                ing.stats.reconnects += 1
                ing.stats.gap_seconds += gap
                metrics.RECONNECTS.labels(self.name).inc()
                logger.warning("connection {} restored after a {:.1f}s gap; resubscribing {} tokens",
                               self.name, gap, len(self.shard.tokens))
            await ws.send_str(json.dumps({"a": "subscribe", "v": self.shard.tokens}))
            await ws.send_str(json.dumps({"a": "mode", "v": ["full", self.shard.tokens]}))
            metrics.WS_CONNECTED.labels(self.name).set(1)
            self.connected_once = True
            await self._receive(ws)

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        ing = self.ingestor
        silence = ing.settings.kite_silence_timeout_s
        while not ing.stopping.is_set():
            try:
                msg = await asyncio.wait_for(ws.receive(), silence)
            except asyncio.TimeoutError:
                logger.warning("connection {}: silent for {:.0f}s, reconnecting", self.name, silence)
                return
            if msg.type == aiohttp.WSMsgType.BINARY:
                ing.on_binary(self.name, msg.data)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                ing.on_text(self.name, msg.data)
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING,
                              aiohttp.WSMsgType.ERROR):
                logger.warning("connection {} closed by server (code {})", self.name, ws.close_code)
                return


class Ingestor:
    def __init__(self, settings: Settings, index: InstrumentIndex, shards: list[Shard],
                 accounts: Sequence[KiteAccount], producer: TickProducer, ws_url: str) -> None:
        self.settings = settings
        self.index = index
        self.shards = shards
        self.accounts = list(accounts)
        self.failed_accounts: set[int] = set()
        self.producer = producer
        self.ws_url = ws_url
        self.decoder = FrameDecoder()
        self.clock = ReceiveClock()
        self.last_exchange_ts = 0
        self.stats = IngestStats()
        self.stopping = asyncio.Event()
        self.http: aiohttp.ClientSession | None = None
        self.connections = [Connection(self, s) for s in shards]

    def on_binary(self, connection: str, data: bytes) -> None:
        if len(data) < 2:
            self.stats.heartbeats += 1
            metrics.HEARTBEATS.labels(connection).inc()
            return
        decoded = self.decoder.decode(data)
        if decoded is None:
            for reason, count in self.decoder.take_new_errors().items():
                metrics.FRAME_ERRORS.labels(reason).inc(count)
            return
        self.stats.frames += 1
        metrics.FRAMES.labels(connection).inc()
        full = decoded["mode"] == MODE_FULL
        if not full.all():
            # Kite streams a new token in quote mode until our mode message lands; those packets
            # carry neither exchange time nor OI, which bars and pricing need: count, don't produce.
            for mode, count in zip(*np.unique(decoded["mode"][~full], return_counts=True), strict=True):
                metrics.PARTIAL_PACKETS.labels(str(mode)).inc(int(count))
            self.stats.partial_packets += int((~full).sum())
            decoded = decoded[full]
            if not len(decoded):
                return
        ticks = ticks_from_kite(decoded, self.clock.stamp(len(decoded), time.time_ns() // 1000),
                                self.last_exchange_ts)
        self.last_exchange_ts = max(self.last_exchange_ts, int(ticks["exchange_ts"].max()))
        groups, unknown = split_by_underlying(ticks, self.index)
        self.stats.unknown_tokens += unknown
        for underlying, rows in groups.items():
            self.producer.offer(underlying, encode_ticks(underlying, rows))
        self.stats.ticks += len(ticks) - unknown
        metrics.TICKS_INGESTED.inc(len(ticks) - unknown)

    def on_text(self, connection: str, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        if isinstance(message, dict) and message.get("type") == "error":
            logger.error("Kite error on {}: {}", connection, message.get("data"))
        elif isinstance(message, dict) and message.get("type") == "message":
            logger.info("Kite message on {}: {}", connection, message.get("data"))

    def fail_over(self, connection: Connection, reason: str = "rejected") -> bool:
        """Move a rejected account's shards elsewhere; False when nowhere to go."""
        failed = connection.shard.account
        self.failed_accounts.add(failed)
        healthy = [i for i in range(len(self.accounts)) if i not in self.failed_accounts]
        try:
            self.shards = reassign(self.shards, failed, healthy, self.settings.kite_max_connections_per_key)
        except ShardingError:
            self.failed_accounts.discard(failed)
            return False
        for conn, shard in zip(self.connections, self.shards, strict=True):
            if conn.shard.account == failed:
                logger.warning("api_key {} rejected ({}): moving {} tokens of {} to api_key {}",
                               self.accounts[failed].api_key, reason, len(shard.tokens), conn.name,
                               self.accounts[shard.account].api_key)
                conn.shard = shard
        return True

    async def run(self) -> None:
        self.http = aiohttp.ClientSession()
        try:
            tasks = [asyncio.create_task(c.run(), name=c.name) for c in self.connections]
            await self.stopping.wait()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await self.http.close()

    def stop(self) -> None:
        self.stopping.set()


# --- start-up: instruments, universe, shards -------------------------------------------------------


def load_instruments(settings: Settings, account: KiteAccount | None, api_url: str) -> list[dict]:
    """The instruments master through kiteconnect's REST client (Kite or the simulator).

    A refused login is a configuration problem (:class:`ConfigError`, one line, no token);
    network trouble is retried a few times with backoff, then reported the same way.
    """
    from kiteconnect import KiteConnect
    from kiteconnect.exceptions import NetworkException, PermissionException, TokenException
    from requests.exceptions import RequestException

    from pipeline.settings import ConfigError

    api_key = account.api_key if account else "strikeflow"
    token = account.access_token.get_secret_value() if account else "simulator"
    kite = KiteConnect(api_key, access_token=token, root=api_url)
    delay = 1.0
    for attempt in range(1, INSTRUMENT_ATTEMPTS + 1):
        try:
            return kite.instruments()
        except (TokenException, PermissionException) as exc:
            raise ConfigError(
                f"configuration error: KITE_ACCESS_TOKEN: Kite refused the instruments request for api_key "
                f"{api_key} ({type(exc).__name__}); log in again for today's access token") from None
        except (NetworkException, RequestException, OSError) as exc:
            if attempt == INSTRUMENT_ATTEMPTS:
                raise ConfigError(
                    f"configuration error: STRIKEFLOW_KITE_API_URL: cannot load instruments from "
                    f"{redact_url(api_url)} after {attempt} attempts ({type(exc).__name__})") from None
            logger.warning("instruments from {} failed ({}); retrying in {:.0f}s", redact_url(api_url),
                           type(exc).__name__, delay)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def universe_index(rows: list[dict], settings: Settings) -> InstrumentIndex:
    from pipeline.instruments import select_universe

    return InstrumentIndex.from_rows(
        select_universe(rows, settings.underlyings, settings.expiries, settings.strikes_around_atm)
    )


def shards_for(index: InstrumentIndex, settings: Settings, n_accounts: int) -> list[Shard]:
    options: dict[str, list[int]] = {}
    companions: dict[str, list[int]] = {}
    for token, underlying, kind in zip(index.tokens.tolist(), index.underlying, index.kind.tolist(), strict=True):
        if kind in (KIND_CALL, KIND_PUT):
            options.setdefault(underlying, []).append(token)
        elif kind in (KIND_INDEX, KIND_FUT):
            companions.setdefault(underlying, []).append(token)
    return plan_shards(options, companions, n_accounts, settings.kite_max_tokens_per_connection,
                       settings.kite_max_connections_per_key)


async def _serve_metrics(ingestor: Ingestor, host: str, port: int) -> web.AppRunner:
    async def metrics_view(request: web.Request) -> web.Response:
        return web.Response(body=metrics.metrics_text(), content_type="text/plain")

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(request: web.Request) -> web.Response:
        up = sum(1 for c in ingestor.connections if c.connected_once)
        ok = up == len(ingestor.connections)
        return web.json_response({"ready": ok, "connections": len(ingestor.connections), "connected": up,
                                  "buffered_bytes": ingestor.producer.buffered_bytes}, status=200 if ok else 503)

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics_view), web.get("/health", health), web.get("/ready", ready)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def _store_instruments(pg_dsn: str, schema: str, rows: list[dict]) -> None:
    """Upsert the universe into ``instruments`` (the worker prices from it), retried with backoff:
    a database that is down must not stop ticks from reaching Kafka."""
    from sinks.timescale_writer import write_instruments

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
    accounts = list(settings.kite_accounts_all()) or [KiteAccount(api_key="strikeflow", access_token="simulator")]
    rows = await asyncio.to_thread(load_instruments, settings, accounts[0], api_url)
    index = universe_index(rows, settings)
    if len(index) == 0:
        raise ShardingError(f"no instruments of {', '.join(settings.underlyings)} in the instruments master")
    instruments_task = None
    if pg_dsn:
        chosen = set(index.tokens.tolist())
        instruments_task = asyncio.create_task(
            _store_instruments(pg_dsn, settings.pg_schema, [r for r in rows if int(r["instrument_token"]) in chosen]))
        # the worker prices from this table: give it a head start, but never wait on a dead database
        await asyncio.wait({instruments_task}, timeout=10)
    shards = shards_for(index, settings, len(accounts))
    topic_task = asyncio.create_task(ensure_topic_eventually(
        kafka_url, settings.ticks_topic, settings.topic_partitions, settings.topic_replication_factor))
    producer = TickProducer(kafka_url, settings.ticks_topic, settings.ingest_buffer_max_bytes)
    await producer.start()
    ingestor = Ingestor(settings, index, shards, accounts, producer, ws_url)
    try:
        runner = await _serve_metrics(ingestor, settings.web_host, metrics_port)
    except OSError as exc:
        await producer.stop()
        from pipeline.settings import ConfigError

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
    from pipeline.settings import ConfigError

    if not settings.kafka_url:
        raise ConfigError("configuration error: STRIKEFLOW_KAFKA_URL: not set; ingest needs kafka://host:9092")
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
