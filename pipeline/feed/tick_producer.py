"""Producing tick batches to Kafka without ever blocking the WebSocket readers.

``offer()`` appends to a bounded in-memory queue and returns at once; one
drain task hands batches to aiokafka (which batches them into produce
requests) without awaiting each delivery. When Kafka is unreachable the queue
grows up to ``max_buffer_bytes``; past that the *oldest* batches are dropped,
counted in ``dropped_batches``/``dropped_bytes`` and logged as an error — a
bounded, reported loss rather than an unbounded memory blow-up (the limit is
configurable: ``STRIKEFLOW_INGEST_BUFFER_MAX_BYTES``). A failed delivery puts
the batch back at the front of the queue; ordering per key is preserved by
aiokafka's one in-flight request per partition.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Awaitable, Mapping

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from loguru import logger

from pipeline.feed.kafka_topics import bootstrap_servers
from pipeline.runtime import metrics
from pipeline.runtime.backoff import retry_forever


class TickProducer:
    """``idempotence``: None = use the idempotent producer when the broker has one (Apache Kafka does; Tansu
    does not: it fails the producer-id request, and we fall back once, logged); True = require it. Always
    ``acks=all``: a batch counts as delivered only when every in-sync replica has it. ``compression``: the
    codec of produced batches (README, "Brokers": measured bytes and CPU per tick)."""

    def __init__(self, kafka_url: str, topic: str, max_buffer_bytes: int, *, compression: str = "none",
                 idempotence: bool | None = None, client_options: Mapping[str, object] | None = None) -> None:
        self.kafka_url = kafka_url
        self.topic = topic
        self.max_buffer_bytes = max_buffer_bytes
        self.compression = None if compression == "none" else compression
        self.idempotence = idempotence  # None: not known yet; decided on the first connect
        self.client_options = dict(client_options or {})
        self._queue: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None
        self._in_flight: set[asyncio.Future] = set()
        self._closing = False
        self.sent_batches = 0
        self.dropped_batches = 0
        self.dropped_bytes = 0
        self.errors = 0
        self.connected = False
        self.last_delivered_at: float | None = None  # epoch s of the newest acknowledged send
        self.last_error: tuple[float, str] | None = None  # (epoch s, exception type) of the newest failed send

    @property
    def buffered_bytes(self) -> int:
        return self._queued_bytes

    def offer(self, key: str, payload: bytes) -> None:
        """Queue one batch for the topic; never blocks, never raises."""
        self._queue.append((key.encode(), payload))
        self._queued_bytes += len(payload)
        while self._queued_bytes > self.max_buffer_bytes and len(self._queue) > 1:
            _, dropped = self._queue.popleft()
            self._queued_bytes -= len(dropped)
            self.dropped_batches += 1
            self.dropped_bytes += len(dropped)
            if self.dropped_batches == 1 or self.dropped_batches % 1000 == 0:
                logger.error(
                    "Kafka is not keeping up: buffer over {} MB, dropped {} oldest batches so far",
                    self.max_buffer_bytes // 2**20, self.dropped_batches,
                )
        metrics.PRODUCE_BUFFER_BYTES.set(self._queued_bytes)
        self._wakeup.set()

    async def start(self, topic_ready: Awaitable[object] | None = None) -> None:
        """Start sending; ``topic_ready`` (the topic's creation) is awaited first, while ``offer`` buffers:
        a send to a topic that does not exist yet would wait out a metadata timeout."""
        self._task = asyncio.create_task(self._run(topic_ready), name="tick-producer")

    async def _connect(self) -> AIOKafkaProducer:
        async def attempt() -> AIOKafkaProducer:
            try:
                producer = await self._started(self.idempotence is not False)
            except KafkaError as exc:
                if self.idempotence is not None or exc.retriable:
                    raise
                logger.warning("the broker has no idempotent producer ({}): producing with acks=all, without "
                               "idempotence (a retried batch may be written twice; the sinks are idempotent)",
                               type(exc).__name__)
                self.idempotence = False
                producer = await self._started(False)
            if self.idempotence is None:
                self.idempotence = True
            logger.info("connected to Kafka, producing to topic {} (acks=all, idempotent: {}, compression: {})",
                        self.topic, self.idempotence, self.compression or "none")
            return producer

        def failed(exc: BaseException, delay: float) -> None:
            logger.warning("Kafka unreachable ({}); buffering {:.1f} MB, retry in {:.1f}s",
                           type(exc).__name__, self._queued_bytes / 2**20, delay)

        return await retry_forever(attempt, retry_on=KafkaError, on_failure=failed, start_s=0.5, max_s=10.0)

    async def _started(self, idempotent: bool) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers(self.kafka_url),
            acks="all",
            enable_idempotence=idempotent,
            compression_type=self.compression,
            linger_ms=2,
            max_batch_size=1 << 20,
            max_request_size=8 << 20,
            **self.client_options,
        )
        try:
            await producer.start()
        except KafkaError:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        return producer

    @property
    def task(self) -> asyncio.Task | None:
        """The sending task (the process needs it alive)."""
        return self._task

    def broker_state(self) -> tuple[bool, str, float | None]:
        """(ok, reason when not, epoch s of the last acknowledged send): ok when connected and no send
        failed since the last one that succeeded."""
        if not self.connected:
            return False, "not connected to Kafka yet (retrying)", self.last_delivered_at
        if self.last_error is not None and (self.last_delivered_at or 0) < self.last_error[0]:
            return (False, f"Kafka sends failing ({self.last_error[1]}); {self._queued_bytes:,} bytes buffered",
                    self.last_delivered_at)
        return True, "", self.last_delivered_at or time.time()

    async def _run(self, topic_ready: Awaitable[object] | None) -> None:
        if topic_ready is not None:
            await asyncio.shield(topic_ready)
        self._producer = await self._connect()
        self.connected = True
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            key, payload = self._queue.popleft()
            self._queued_bytes -= len(payload)
            metrics.PRODUCE_BUFFER_BYTES.set(self._queued_bytes)
            try:
                future = await self._producer.send(self.topic, payload, key=key)
            except KafkaError as exc:
                self._requeue(key, payload, exc)
                await asyncio.sleep(0.5)
                continue
            self._in_flight.add(future)
            future.add_done_callback(lambda f, k=key, p=payload: self._delivered(f, k, p))

    def _requeue(self, key: bytes, payload: bytes, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = (time.time(), type(exc).__name__)
        metrics.PRODUCE_ERRORS.inc()
        if self.errors == 1 or self.errors % 100 == 0:
            logger.warning("Kafka send failed ({}); batch re-queued", type(exc).__name__)
        self._queue.appendleft((key, payload))
        self._queued_bytes += len(payload)
        self._wakeup.set()

    def _delivered(self, future: asyncio.Future, key: bytes, payload: bytes) -> None:
        self._in_flight.discard(future)
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            self._requeue(key, payload, exc)
        else:
            self.sent_batches += 1
            self.last_delivered_at = time.time()

    async def stop(self, timeout: float = 10.0) -> None:
        """Flush what is queued (up to ``timeout``), then close the producer."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                if self._queue or self._in_flight:  # something to flush (else don't wait for a dead broker)
                    await asyncio.wait_for(asyncio.shield(self._task), timeout)
                if self._in_flight:
                    await asyncio.wait(self._in_flight, timeout=timeout)
            except asyncio.TimeoutError:
                logger.error("Kafka flush timed out: {} batches not delivered", len(self._queue) + len(self._in_flight))
            finally:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
