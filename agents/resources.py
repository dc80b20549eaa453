"""Connections the agents share in one worker: the PostgreSQL pool and writer, Redis and its publishing front.

Created on first use (agents start before Faust's extra services, so they
ask for them with ``await resources.get()``) and closed on worker shutdown
after a final flush.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from loguru import logger

from pipeline.runtime import metrics
from pipeline.runtime.backoff import retry_forever
from pipeline.runtime.health import Checks, ConsumerProgress, LoopMonitor, TaskWatch
from pipeline.runtime.redaction import redact_url
from pipeline.runtime.settings import Settings
from sinks.migrate import schema_version
from sinks.redis.conflation import ConflatingPublisher
from sinks.redis.publisher import RedisPublisher
from sinks.result_writer import ResultWriter
from sinks.timescale_writer import TimescaleWriter

PROBE_INTERVAL_S = 2.0  # how often /ready's database and Redis checks are refreshed
PROBE_TIMEOUT_S = 3.0


@dataclass
class Connected:
    pool: asyncpg.Pool
    redis: aioredis.Redis
    writer: TimescaleWriter  # priced ticks
    results: ResultWriter  # bars, rollups, volatility index
    publisher: ConflatingPublisher


class WorkerResources:
    def __init__(self, settings: Settings, *, pg_dsn: str | None = None, redis_url: str | None = None) -> None:
        self.settings = settings
        self.pg_dsn = pg_dsn or (settings.pg_dsn.get_secret_value() if settings.pg_dsn else None)
        self.redis_url = redis_url or (settings.redis_url.get_secret_value() if settings.redis_url else None)
        self._connected: Connected | None = None
        self._lock = asyncio.Lock()
        self.partitions_assigned = False
        # /ready and /health (pipeline.runtime.health)
        self.checks = Checks()
        self.tasks = TaskWatch(metrics.TASK_DEATHS)
        self.loop = LoopMonitor(metrics.EVENT_LOOP_LAG)
        self.progress = ConsumerProgress()
        for name in ("database", "redis"):
            self.checks.expect(name, "not connected yet")

    async def get(self) -> Connected:
        """The shared connections; while PostgreSQL or Redis is unreachable, retries with backoff
        (the agents wait, Kafka buffers, /ready says not ready) instead of crashing the agents."""
        if self._connected is not None:
            return self._connected
        async with self._lock:
            if self._connected is None:
                self._connected = await retry_forever(
                    self._connect, on_failure=self._log_connect_failure,
                    retry_on=(OSError, asyncio.TimeoutError, asyncpg.PostgresError, aioredis.RedisError))
        return self._connected

    def _log_connect_failure(self, exc: BaseException, delay: float) -> None:
        logger.error("worker cannot connect to PostgreSQL {} / Redis {} ({}); retrying in {:.0f}s",
                     redact_url(self.pg_dsn or ""), redact_url(self.redis_url or ""), type(exc).__name__, delay)

    async def _connect(self) -> Connected:
        if not self.pg_dsn or not self.redis_url:
            raise RuntimeError("worker needs STRIKEFLOW_PG_DSN and STRIKEFLOW_REDIS_URL (or run `strikeflow demo`)")
        # min_size=0: no "connection floor" for asyncpg to restore (and log a traceback for) while the
        # database is down; connections are made on demand and kept while in use
        pool = await asyncpg.create_pool(self.pg_dsn, min_size=0, max_size=4, timeout=10)
        redis = aioredis.from_url(self.redis_url)
        try:
            await pool.fetchval("SELECT 1")  # the pool connects lazily: reach the database now
            await redis.ping()
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, aioredis.RedisError):
            await pool.close()
            await redis.aclose()
            raise
        schema = self.settings.pg_schema
        writer = TimescaleWriter(pool, schema)
        publisher = ConflatingPublisher(RedisPublisher(redis, per_instrument=self.settings.redis_per_instrument),
                                        max_tick_age_s=self.settings.redis_max_tick_age_s)
        await publisher.start()
        self.tasks.watch(publisher.task, "redis-publisher")
        logger.info("worker connected: PostgreSQL {} (schema {}), Redis {}", redact_url(self.pg_dsn), schema,
                    redact_url(self.redis_url))
        return Connected(pool, redis, writer, ResultWriter(pool, schema), publisher)

    def start_watchdogs(self) -> None:
        """The event-loop monitor and the database/Redis probe, as watched tasks."""
        self.tasks.supervise(self.loop.run, "loop-monitor")
        self.tasks.supervise(self._probe_forever, "service-probe")

    async def _probe_forever(self) -> None:
        while True:
            await self.probe()
            await asyncio.sleep(PROBE_INTERVAL_S)

    async def probe(self) -> None:
        """Refresh the ``database`` (reachable, schema current) and ``redis`` (PING) checks."""
        connected = self._connected
        if connected is None:
            for name in ("database", "redis"):
                self.checks.failed(name, "not connected yet (retrying; see the log)")
            return
        schema = self.settings.pg_schema
        try:
            version, missing = await asyncio.wait_for(schema_version(connected.pool, schema), PROBE_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
            self.checks.failed("database", f"unreachable ({type(exc).__name__})")
        else:
            if missing:
                self.checks.failed("database", f"schema {schema} lacks {', '.join(missing)}: run strikeflow migrate")
            else:
                self.checks.passed("database", schema=schema, schema_version=version)
        try:
            await asyncio.wait_for(connected.redis.ping(), PROBE_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError, aioredis.RedisError) as exc:
            self.checks.failed("redis", f"unreachable ({type(exc).__name__})")
        else:
            self.checks.passed("redis")

    def readiness(self, highwaters: dict[Any, int | None], committed: dict[Any, int | None]) -> dict[str, Any]:
        """``/ready``: every check (``pipeline.runtime.health``) over the assigned ticks partitions'
        high watermarks and committed offsets."""
        if self.partitions_assigned:
            self.checks.passed("broker")
        else:
            self.checks.failed("broker", "no partitions assigned yet (joining the consumer group)")
        self.progress.into(self.checks, highwaters, committed, self.settings.ready_stall_s)
        self.tasks.into(self.checks)
        state = self.checks.report()
        state.update(connected=self._connected is not None, partitions_assigned=self.partitions_assigned)
        return state

    async def close(self) -> None:
        self.tasks.stopping()
        connected, self._connected = self._connected, None
        if connected is None:
            return
        await connected.publisher.stop()
        await connected.redis.aclose()
        await connected.pool.close()
