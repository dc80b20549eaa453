import pytest

from pipeline.commands.top import Sample, consumer_lag, render, view_between

T = "strikeflow_ticks_ingested_total"
P = "strikeflow_ticks_processed_total"


@pytest.mark.unit
def test_rates_are_counter_deltas_per_second() -> None:
    old = Sample(10.0, {T: 100.0}, {P: 50.0}, {})
    new = Sample(12.0, {T: 300.0, "strikeflow_produce_buffer_bytes": 2048.0}, {P: 150.0}, {"ticks": 7})
    view = view_between(old, new)
    assert view.ticks_in_per_s == 100.0 and view.ticks_processed_per_s == 50.0
    assert view.produce_buffer_bytes == 2048.0 and view.consumer_lag == {"ticks": 7}


@pytest.mark.unit
def test_counter_reset_after_restart_counts_from_zero() -> None:
    view = view_between(Sample(0.0, {T: 1000.0}, {}, {}), Sample(1.0, {T: 30.0}, {}, {}))
    assert view.ticks_in_per_s == 30.0


@pytest.mark.unit
def test_unreachable_process_shows_down() -> None:
    view = view_between(Sample(0.0, {}, {}, {}), Sample(1.0, {}, {P: 1.0}, {}))
    text = render(view)
    assert "ingest   DOWN" in text and "worker   up" in text and view.ingest_up is False


@pytest.mark.integration
async def test_consumer_lag_is_positive_until_the_group_commits(kafka_url: str, unique_name: str) -> None:
    from aiokafka import AIOKafkaConsumer

    from pipeline.feed.tick_producer import (
        TickProducer,
        bootstrap_servers,
        ensure_topic,
    )

    await ensure_topic(kafka_url, unique_name, partitions=1)
    producer = TickProducer(kafka_url, unique_name, max_buffer_bytes=1 << 20)
    await producer.start()
    for i in range(6):
        producer.offer(f"k{i}", b"x")
    await producer.stop()
    group = f"{unique_name}-group"
    assert (await consumer_lag(kafka_url, group, [unique_name]))[unique_name] > 0
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


@pytest.mark.integration
async def test_consumer_lag_with_dead_kafka_is_empty() -> None:
    from pipeline.commands.local_services import free_port

    assert await consumer_lag(f"kafka://127.0.0.1:{free_port()}", "g", ["t"]) == {}
