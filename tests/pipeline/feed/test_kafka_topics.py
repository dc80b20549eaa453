"""The pipeline's topics on the session's broker: created with their configuration, checked, and measured."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline.commands.local_services import LocalServices, free_port
from pipeline.feed.kafka_topics import (
    DLQ_SUFFIX,
    TopicSetupError,
    TopicSpec,
    bootstrap_servers,
    consumer_lag,
    ensure_topic,
    ensure_topics,
    worker_topics,
)
from pipeline.feed.tick_producer import TickProducer
from pipeline.runtime.settings import load_settings

pytestmark = pytest.mark.integration


async def _describe(kafka_url: str, names: list[str]) -> dict[str, tuple[int, dict[str, str]]]:
    """Per topic: (partitions, its topic-level configs), read back from the broker."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(kafka_url))
    await admin.start()
    try:
        described = {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(names)}
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
        configs: dict[str, dict[str, str]] = {}
        for response in responses:
            for resource in response.resources:
                configs[resource[3]] = {entry[0]: entry[1] for entry in resource[4]}
        return {n: (described[n], configs.get(n, {})) for n in names}
    finally:
        await admin.close()


async def test_worker_topics_created_with_partitions_and_retention(kafka_url: str, unique_name: str) -> None:
    settings = load_settings(ticks_topic=f"{unique_name}-ticks", bars_topic=f"{unique_name}-bars",
                             topic_partitions=3, ticks_retention_hours=30, bars_retention_hours=12)
    specs = worker_topics(settings)
    created = await ensure_topics(kafka_url, specs)
    assert sorted(created) == sorted(s.name for s in specs)
    assert await ensure_topics(kafka_url, specs) == []  # a second start creates nothing
    found = await _describe(kafka_url, [s.name for s in specs])
    hour_ms = 3_600_000
    ticks, bars = found[f"{unique_name}-ticks"], found[f"{unique_name}-bars"]
    assert ticks[0] == 3 and ticks[1]["retention.ms"] == str(30 * hour_ms)
    assert bars[0] == 3 and bars[1]["retention.ms"] == str(12 * hour_ms)
    assert bars[1]["cleanup.policy"] == "delete"  # not compacted: one key carries thousands of bars
    assert found[f"{unique_name}-ticks{DLQ_SUFFIX}"][1]["retention.ms"] == str(30 * 24 * hour_ms)


async def test_existing_topic_with_fewer_partitions_is_one_clear_error(kafka_url: str, unique_name: str) -> None:
    await ensure_topic(kafka_url, f"{unique_name}-ticks", 1)
    settings = load_settings(ticks_topic=f"{unique_name}-ticks", bars_topic=f"{unique_name}-bars", topic_partitions=4)
    with pytest.raises(TopicSetupError) as raised:
        await ensure_topics(kafka_url, worker_topics(settings))
    message = str(raised.value)
    assert "\n" not in message
    assert f"topic {unique_name}-ticks has 1 partition(s), fewer than the 4 configured" in message
    assert "STRIKEFLOW_TOPIC_PARTITIONS=1" in message


async def test_topic_the_broker_refuses_to_create_is_one_clear_error(services: LocalServices, kafka_url: str,
                                                                     unique_name: str) -> None:
    if services.broker.startswith("Tansu"):
        pytest.skip("Tansu accepts any replication factor; Apache Kafka refuses 3 replicas on one node")
    with pytest.raises(TopicSetupError) as raised:
        await ensure_topics(kafka_url, [TopicSpec(f"{unique_name}-ticks", 2, 3)])
    message = str(raised.value)
    assert "\n" not in message and f"cannot create Kafka topic {unique_name}-ticks" in message
    assert "InvalidReplicationFactor" in message and "replication 3" in message


async def test_ingest_with_too_few_partitions_exits_2_with_one_line(kite_simulator, kafka_url: str,
                                                                   unique_name: str) -> None:  # noqa: ANN001
    _, addr = await kite_simulator()
    await ensure_topic(kafka_url, f"{unique_name}-ticks", 1)
    env = {**os.environ, "STRIKEFLOW_KAFKA_URL": kafka_url, "STRIKEFLOW_TICKS_TOPIC": f"{unique_name}-ticks",
           "STRIKEFLOW_TOPIC_PARTITIONS": "2", "STRIKEFLOW_UNDERLYINGS": '["NIFTY"]', "STRIKEFLOW_EXPIRIES": "1",
           "STRIKEFLOW_STRIKES_AROUND_ATM": "1"}
    env.pop("STRIKEFLOW_PG_DSN", None)
    proc = await asyncio.create_subprocess_exec(  # not subprocess.run: the simulator runs on this event loop
        sys.executable, "-m", "pipeline.commands.cli", "ingest", "--ws-url", f"ws://{addr}", "--api-url",
        f"http://{addr}", "--metrics-port", str(free_port()), env=env, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    stderr = err.decode(errors="replace")
    assert proc.returncode == 2, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert "has 1 partition(s), fewer than the 2 configured" in last and "Traceback" not in stderr


async def test_consumer_lag_counts_records_until_the_group_commits(services: LocalServices, kafka_url: str,
                                                                   unique_name: str) -> None:
    await ensure_topic(kafka_url, unique_name, partitions=1)
    producer = TickProducer(kafka_url, unique_name, max_buffer_bytes=1 << 20)
    await producer.start()
    for i in range(6):
        producer.offer(f"k{i}", b"x")
    await producer.stop()
    group = f"{unique_name}-group"
    lag = (await consumer_lag(kafka_url, group, [unique_name]))[unique_name]
    # exact on Apache Kafka; Tansu answers ListOffsets with the end of the last batch (a lower bound)
    assert lag == 6 if not services.broker.startswith("Tansu") else 0 < lag <= 6
    consumer = AIOKafkaConsumer(unique_name, bootstrap_servers=bootstrap_servers(kafka_url), group_id=group,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        records = await consumer.getmany(timeout_ms=3000)
        assert sum(len(r) for r in records.values()) == 6
        await consumer.commit()
    finally:
        await consumer.stop()
    assert await consumer_lag(kafka_url, group, [unique_name]) == {unique_name: 0}


async def test_consumer_lag_with_dead_kafka_is_empty() -> None:
    assert await consumer_lag(f"kafka://127.0.0.1:{free_port()}", "g", ["t"]) == {}

