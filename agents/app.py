"""The Faust application: built from a Settings object by :func:`create_app`.

``faust -A pipeline.app worker`` also works (``pipeline/app.py`` builds the
app from the environment on first access; ``STRIKEFLOW_KAFKA_URL`` must be
set then). ``strikeflow worker`` and ``strikeflow demo`` call
:func:`create_app` with the settings they loaded.

Guarantee: at-least-once, made exactly-once in results by idempotent sinks. The store agents ack a
record once its batch is written; the process agent acks a record only once a saved checkpoint of its
partition covers it (``agents.checkpointing``), so committed offsets never pass state that is not
durable.
Faust's ``exactly_once`` (Kafka transactions) is not used: Tansu, the fallback dev
broker, has no transactions, and the idempotent sinks already make a redelivery
harmless. The ingestor's producer is idempotent where the broker allows it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust
from aiohttp import web as aiohttp_web
from faust.transport.drivers import aiokafka as _driver
from loguru import logger

from agents.dead_letters import DeadLetters
from agents.process import register_process_agent
from agents.resources import WorkerResources
from agents.store import register_store_agents
from agents.topics import Topics, declare_topics
from pipeline.runtime.health import liveness
from pipeline.runtime.kafka_auth import faust_credentials
from pipeline.runtime.metrics import metrics_text
from pipeline.runtime.settings import ConfigError, Settings


def _tune_consumer_fetch(fetch_max_wait_ms: int) -> None:
    """Faust (0.11-0.15) builds its aiokafka consumer with ``fetch_max_wait_ms=1500`` hard-coded, so a fetch
    that finds less than a batch waits up to 1.5 s on the broker: on Tansu every fetch does, which delays the
    live path and a new owner's catch-up by that much per round trip. Set the consumer's value after Faust
    built it (before it starts; aiokafka reads it when it creates its fetcher)."""
    original = getattr(_driver.AIOKafkaConsumerThread._create_worker_consumer, "strikeflow_original", None) or \
        _driver.AIOKafkaConsumerThread._create_worker_consumer

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = fetch_max_wait_ms  # noqa: SLF001 - see the docstring
        return consumer

    create_worker_consumer.strikeflow_original = original  # type: ignore[attr-defined]
    _driver.AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer


def _faust_datadir(settings: Settings) -> Path:
    """Faust's data directory; Faust creates only the last component, so make the parents."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings.data_dir.resolve() / "faust"


def create_app(settings: Settings, *, kafka_url: str | None = None, pg_dsn: str | None = None,
               redis_url: str | None = None) -> faust.App:
    """A configured app with the agents registered; service URLs default to ``settings``."""
    kafka_url = kafka_url or settings.kafka_url
    if not kafka_url:
        raise ConfigError(
            "configuration error: STRIKEFLOW_KAFKA_URL: not set; a worker needs a broker "
            "(kafka://host:9092), or run `strikeflow demo`, which starts one"
        )
    _tune_consumer_fetch(settings.kafka_fetch_max_wait_ms)
    app = faust.App(
        settings.app_id,
        broker=kafka_url,
        store="memory://",
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        broker_credentials=faust_credentials(settings),
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_s,
        broker_rebalance_timeout=settings.kafka_rebalance_timeout_s,
        consumer_auto_offset_reset="earliest",
        # The process agent acks a ticks record once a checkpoint covers it (agents/checkpointing.py),
        # every checkpoint_interval_s; shutdown takes a last checkpoint itself and must not wait for
        # acks: what is unacked is replayed by the next owner from the checkpoint.
        stream_wait_empty=False,
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        datadir=str(_faust_datadir(settings)),
    )
    resources = WorkerResources(settings, pg_dsn=pg_dsn, redis_url=redis_url)
    app.strikeflow_resources = resources  # type: ignore[attr-defined]
    register_agents(app, settings, resources)
    _register_pages(app, resources)
    return app


def register_agents(app: faust.App, settings: Settings, resources: WorkerResources) -> Topics:
    topics = declare_topics(app, settings)
    dead = DeadLetters(app, settings.topic_partitions)
    checkpoints = register_process_agent(app, settings, resources, topics, dead)
    register_store_agents(app, settings, resources, topics, dead)

    @app.on_partitions_assigned.connect
    async def _assigned(app: faust.App, assigned: set, **_: object) -> None:
        resources.partitions_assigned = True

    @app.on_before_shutdown.connect
    async def _shutdown(app: faust.App, **_: object) -> None:
        try:
            await checkpoints.take()  # a clean stop leaves nothing to replay
        except Exception as exc:  # noqa: BLE001 - the next start replays from the last saved checkpoint
            logger.warning("final checkpoint failed ({}: {})", type(exc).__name__, exc)
        await resources.close()

    return topics


def _highwater(app: faust.App, tp: Any) -> int | None:
    """The partition's high watermark as the consumer last fetched it (None before the first fetch)."""
    try:
        return app.consumer.highwater(tp)
    except (KeyError, AssertionError, AttributeError):
        return None


def _committed(app: faust.App, tp: Any) -> int | None:
    """The partition's committed offset as this consumer knows it (Faust keeps it without a public getter;
    None when unknown): records below it need no processing."""
    return getattr(app.consumer, "_committed_offset", {}).get(tp)


def _register_pages(app: faust.App, resources: WorkerResources) -> None:
    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return aiohttp_web.Response(body=metrics_text(), content_type="text/plain", charset="utf-8")

    @app.task
    async def _watchdogs() -> None:
        resources.start_watchdogs()

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        alive, body = liveness(resources.loop, resources.tasks)
        return web.json(body, status=200 if alive else 503)

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        ticks = [tp for tp in app.consumer.assignment() if tp.topic == resources.settings.ticks_topic]
        state = resources.readiness({tp: _highwater(app, tp) for tp in ticks},
                                    {tp: _committed(app, tp) for tp in ticks})
        # which partitions this worker owns now (on-call, and the recovery benchmark picks its victim by it)
        state["assignment"] = sorted(f"{tp.topic}:{tp.partition}" for tp in app.consumer.assignment())
        return web.json(state, status=200 if state["ready"] else 503)
