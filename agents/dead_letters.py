"""Dead letters: a record that can never be processed goes to ``<topic>.dlq``, counted and logged once.

The one error policy (``pipeline.runtime.errors``): transient failures are retried with the one backoff;
poison records (undecodable, or a write the database refuses for the record's own content) are never
retried forever and never silently dropped: each is sent, unchanged, to the dead-letter topic of its
topic with its coordinates and the reason in headers (``strikeflow-source`` = ``topic:partition@offset``,
``strikeflow-reason``), counted in ``strikeflow_dead_letters_total{topic,reason}`` and logged once.
Replay them after a fix with any Kafka tool (the value is the original record).
"""

from __future__ import annotations

from typing import Any

import faust
from loguru import logger

from pipeline.runtime import metrics
from pipeline.runtime.redaction import escape_line

DLQ_SUFFIX = ".dlq"


class DeadLetters:
    """The dead-letter topics of one app, declared on first use."""

    def __init__(self, app: faust.App, partitions: int = 1) -> None:
        self.app = app
        self.partitions = partitions
        self._topics: dict[str, faust.TopicT] = {}

    async def _topic(self, source: str) -> faust.TopicT:
        topic = self._topics.get(source)
        if topic is None:
            topic = self.app.topic(source + DLQ_SUFFIX, key_serializer="raw", value_serializer="raw",
                                   partitions=self.partitions)
            await topic.maybe_declare()
            self._topics[source] = topic
        return topic

    async def send(self, message: Any, reason: str, exc: BaseException | None = None) -> None:
        """Send the Kafka ``message`` (a Faust ``Message``: topic, partition, offset, key, value) to its topic's
        dead-letter topic; count and log it."""
        detail = "" if exc is None else f"{type(exc).__name__}: {exc}"
        await self.send_value(message, message.key, message.value, reason, detail)

    async def send_value(self, origin: Any, key: bytes | None, value: bytes, reason: str, detail: str = "") -> None:
        """Send ``value`` (part of the record ``origin``, e.g. the ticks of a record the core rejected) to the
        dead-letter topic of ``origin``'s topic, with ``origin``'s coordinates; count and log it once."""
        source = f"{origin.topic}:{origin.partition}@{origin.offset}"
        topic = await self._topic(origin.topic)
        await topic.send(key=key, value=value,
                         headers={"strikeflow-source": source.encode(), "strikeflow-reason": reason.encode(),
                                  "strikeflow-error": escape_line(detail, 500).encode()})
        metrics.DEAD_LETTERS.labels(origin.topic, reason).inc()
        logger.error("poison record {} ({}) sent to {}{}: {}", source, reason, origin.topic, DLQ_SUFFIX,
                     escape_line(detail, 500))


__all__ = ["DLQ_SUFFIX", "DeadLetters"]
