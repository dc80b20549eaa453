"""The pipeline's Kafka topics, created explicitly with their partitions, replication and retention.

Production clusters usually forbid auto-creation (``auto.create.topics.enable=false``, the local Apache
Kafka broker too), and a topic auto-created on first produce gets the broker's defaults: one partition,
the broker's retention. So the ingestor creates ``ticks`` and the worker creates every topic it reads or
writes, before either produces or subscribes. An existing topic is left as it is, except that one with
fewer partitions than configured is an error (its keys would hash to other partitions than the
configuration says, and the consumer group could never use the configured parallelism).

Retention (``retention.ms``, deletion, not compaction):

- ``ticks`` keeps ``STRIKEFLOW_TICKS_RETENTION_HOURS`` (default 168 h = 7 days): a whole trading day can
  be replayed from it through the following week (a Friday's session on Monday), and a worker that was
  down over a weekend resumes from its committed offsets.
- ``bars``, ``bars-rollups`` and ``ticks-priced`` keep ``STRIKEFLOW_BARS_RETENTION_HOURS`` (default 168 h).
  They carry results from the process agent to the store agents; TimescaleDB is their durable home.
  Compaction would be wrong: a key (an underlying) carries thousands of different bars, and compaction
  keeps only the newest record per key.
- ``<topic>.dlq`` (dead letters) keep 30 days: someone has to look at them.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
    for_code,
)
from aiokafka.protocol.metadata import MetadataRequest
from loguru import logger

from pipeline.runtime.backoff import retry_forever
from pipeline.runtime.errors import is_transient
from pipeline.runtime.settings import ConfigError, Settings

DLQ_SUFFIX = ".dlq"
_HOUR_MS = 3_600_000
DLQ_RETENTION_HOURS = 30 * 24


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    config: Mapping[str, str] = field(default_factory=dict)  # topic-level configs (retention.ms, ...)


class TopicSetupError(ConfigError):
    """A topic cannot be used as configured (too few partitions, creation refused); one actionable line."""


class KafkaAccessError(ConfigError):
    """The broker refuses this client for good: wrong credentials, a certificate we do not trust. Retrying
    cannot help (aiokafka would retry forever, reporting only "Unable to bootstrap"); one actionable line."""


_AUTH_ERRORS = (SaslAuthenticationFailed, AuthenticationFailedError, UnsupportedSaslMechanismError,
                IllegalSaslStateError)


async def check_access(kafka_url: str, client_options: Mapping[str, object] | None = None) -> None:
    """Open one connection to the first broker that answers, with the client's security settings, and turn
    a refusal into a :class:`KafkaAccessError`; an unreachable broker stays a transient ``OSError``."""
    options = dict(client_options or {})
    if options.get("security_protocol", "PLAINTEXT") == "PLAINTEXT":
        return
    last: OSError | None = None
    for address in bootstrap_servers(kafka_url).split(","):
        host, _, port = address.rpartition(":")
        try:
            conn = await create_conn(host, int(port), request_timeout_ms=10_000, **options)
        except ssl.SSLCertVerificationError as exc:
            raise KafkaAccessError(
                f"configuration error: STRIKEFLOW_KAFKA_CA_FILE: the certificate of the Kafka broker {address} is not "
                f"trusted ({exc.verify_message}); set the CA file that signed it") from None
        except _AUTH_ERRORS as exc:
            raise KafkaAccessError(
                f"configuration error: STRIKEFLOW_KAFKA_USERNAME/STRIKEFLOW_KAFKA_PASSWORD: the Kafka broker {address} "
                f"refused user {options.get('sasl_plain_username')!r} ({options.get('sasl_mechanism')}, "
                f"{type(exc).__name__}); check the user, the password and the mechanism") from None
        except OSError as exc:
            last = exc
            continue
        conn.close()
        return
    if last is not None:
        raise last


def bootstrap_servers(kafka_url: str) -> str:
    """``kafka://h1:9092;h2:9092`` -> ``h1:9092,h2:9092`` (aiokafka's form)."""
    return kafka_url.split("://", 1)[-1].replace(";", ",")


def _retention(hours: float) -> dict[str, str]:
    return {"cleanup.policy": "delete", "retention.ms": str(int(hours * _HOUR_MS))}


def ticks_topic(settings: Settings) -> TopicSpec:
    return TopicSpec(settings.ticks_topic, settings.topic_partitions, settings.topic_replication_factor,
                     _retention(settings.ticks_retention_hours))


def worker_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic the worker reads or writes: ticks, its results, and the dead letters of each."""
    results = [settings.bars_topic, f"{settings.bars_topic}-rollups", f"{settings.ticks_topic}-priced"]
    specs = [ticks_topic(settings)] + [
        TopicSpec(name, settings.topic_partitions, settings.topic_replication_factor,
                  _retention(settings.bars_retention_hours)) for name in results]
    return specs + [TopicSpec(spec.name + DLQ_SUFFIX, spec.partitions, spec.replication,
                              _retention(DLQ_RETENTION_HOURS)) for spec in specs]


async def _existing_partitions(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partitions of those of ``names`` that exist. The metadata request says "do not auto-create": a
    broker that auto-creates topics (Tansu) would otherwise create a named one with its default partitions
    (``describe_topics`` has no such flag, hence aiokafka's request sender)."""
    response = await admin._send_request(MetadataRequest(names, allow_auto_topic_creation=False))  # noqa: SLF001
    return {d["topic"]: len(d["partitions"]) for d in response.to_object()["topics"]
            if d.get("error_code", 0) == 0 and d.get("partitions")
            and all(p.get("error_code", 0) == 0 and p.get("leader", -1) >= 0 for p in d["partitions"])}


async def ensure_topics(kafka_url: str, specs: Iterable[TopicSpec], client_options: Mapping[str, object] | None = None
                        ) -> list[str]:
    """Create the missing topics of ``specs``; the names created. :class:`TopicSetupError` when one exists
    with fewer partitions than its spec or the broker refuses to create one (not a transient failure)."""
    specs = list(specs)
    await check_access(kafka_url, client_options)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(kafka_url), **dict(client_options or {}))
    await admin.start()
    try:
        existing = await _existing_partitions(admin, [s.name for s in specs])
        created = [s.name for s in specs if s.name not in existing and await _create(admin, s)]
        # a topic just created (by us or by another process) has no leader for a moment: wait until every
        # one has, so the check below sees them all and the caller can produce and consume at once
        if len(existing) < len({s.name for s in specs}):
            existing = await _until_known(admin, [s.name for s in specs])
        for spec in specs:
            have = existing.get(spec.name)
            if have is not None and have < spec.partitions:
                raise TopicSetupError(
                    f"configuration error: STRIKEFLOW_TOPIC_PARTITIONS: topic {spec.name} has {have} partition(s), "
                    f"fewer than the {spec.partitions} configured; add partitions (kafka-topics --alter "
                    f"--topic {spec.name} --partitions {spec.partitions}) or set STRIKEFLOW_TOPIC_PARTITIONS={have}")
        return created
    finally:
        await admin.close()


async def _until_known(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float = 30.0) -> dict[str, int]:
    """:func:`_existing_partitions` once every one of ``names`` has its partitions and leaders (or, after
    ``timeout_s``, whatever is known)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        known = await _existing_partitions(admin, names)
        if len(known) == len(set(names)) or asyncio.get_running_loop().time() > deadline:
            return known
        await asyncio.sleep(0.1)


async def _create(admin: AIOKafkaAdminClient, spec: TopicSpec) -> bool:
    """True when this call created ``spec``; False when it exists already (created meanwhile, or its
    metadata was not complete yet when described)."""
    try:
        response = await admin.create_topics([NewTopic(spec.name, num_partitions=spec.partitions,
                                                       replication_factor=spec.replication,
                                                       topic_configs=dict(spec.config))])
    except TopicAlreadyExistsError:
        return False
    for name, code, message in _errors(response):
        if code == TopicAlreadyExistsError.errno:
            return False
        kind = for_code(code).__name__
        raise TopicSetupError(
            f"cannot create Kafka topic {name}: the broker refused ({kind}{': ' + message if message else ''}); "
            f"create it with {spec.partitions} partitions and replication {spec.replication}, or grant this "
            f"client CREATE on it")
    logger.info("created Kafka topic {} ({} partitions, replication {}, {})", spec.name, spec.partitions,
                spec.replication, ", ".join(f"{k}={v}" for k, v in spec.config.items()) or "broker defaults")
    return True


def _errors(response: object) -> list[tuple[str, int, str]]:
    """``(topic, error_code, message)`` of each topic a CreateTopics response reports an error for."""
    rows = getattr(response, "topic_errors", None) or getattr(response, "topics", None) or []
    out = []
    for row in rows:
        name, code = row[0], row[1]
        message = row[2] if len(row) > 2 and isinstance(row[2], str) else ""
        if code:
            out.append((name, code, message or ""))
    return out


async def ensure_topic(kafka_url: str, name: str, partitions: int, replication: int = 1) -> None:
    """One topic with the broker's default configs (tests, tools): :func:`ensure_topics` of one spec."""
    await ensure_topics(kafka_url, [TopicSpec(name, partitions, replication)])


async def ensure_topics_eventually(kafka_url: str, specs: Iterable[TopicSpec],
                                   client_options: Mapping[str, object] | None = None) -> list[str]:
    """:func:`ensure_topics`, retried with backoff while Kafka is unreachable; a :class:`TopicSetupError` or
    :class:`KafkaAccessError` (not transient) is raised at once."""
    specs = list(specs)
    return await retry_forever(
        lambda: ensure_topics(kafka_url, specs, client_options), retry_on=is_transient, start_s=0.5, max_s=10.0,
        on_failure=lambda exc, delay: logger.warning("cannot create Kafka topics yet ({}); retrying in {:.1f}s",
                                                     type(exc).__name__, delay),
    )


async def consumer_lag(kafka_url: str, group: str, topics: list[str],
                       client_options: Mapping[str, object] | None = None) -> dict[str, int]:
    """Records not yet committed by ``group``, per topic (summed over partitions); {} when Kafka is unreachable.

    Reads the group's committed offsets with the admin API, without joining the group (no rebalance of the
    running workers), and the partitions' end offsets with a group-less consumer. Note: the dev broker
    Tansu answers ListOffsets with the end of the last record *batch* rather than the last record, so there
    the figure is a lower bound; on Apache Kafka it is exact.
    """
    options = dict(client_options or {})
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(kafka_url), **options)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(kafka_url), enable_auto_commit=False, **options)
    try:
        await admin.start()
        await consumer.start()
        counts = await _existing_partitions(admin, topics)
        partitions = [TopicPartition(t, p) for t, n in counts.items() for p in range(n)]
        if not partitions:
            return {}
        ends = await consumer.end_offsets(partitions)
        committed = await _committed(admin, group, partitions)
        lag: dict[str, int] = {}
        for tp in partitions:
            done = committed.get(tp)
            offset = done.offset if done is not None and done.offset >= 0 else 0
            lag[tp.topic] = lag.get(tp.topic, 0) + max(ends[tp] - offset, 0)
        return lag
    except Exception:  # noqa: BLE001 - top and the bench keep drawing when Kafka is down
        return {}
    finally:
        await consumer.stop()
        await admin.close()


async def _committed(admin: AIOKafkaAdminClient, group: str, partitions: list[TopicPartition],
                     timeout_s: float = 10.0) -> dict[TopicPartition, Any]:
    """The group's committed offsets; retried while the broker's group coordinator is still loading (a fresh
    broker answers "coordinator not available" until its offsets topic is ready)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            return await admin.list_consumer_group_offsets(group, partitions=partitions)
        except KafkaError as exc:
            if not exc.retriable or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)
