"""The Kafka topics the agents read and write, declared on a Faust app from the settings."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from pipeline.runtime.settings import Settings


@dataclass(frozen=True)
class Topics:
    ticks: faust.TopicT  # TICK_DTYPE batches from the ingestor, keyed by underlying
    bars: faust.TopicT  # BAR_DTYPE: closed and late-corrected bars
    priced_ticks: faust.TopicT  # PRICED_TICK_DTYPE, only when tick storage is on
    rollups: faust.TopicT  # strike + chain rollup rows


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    def topic(name: str) -> faust.TopicT:
        return app.topic(name, key_serializer="raw", value_serializer="raw", partitions=settings.topic_partitions)

    return Topics(
        ticks=topic(settings.ticks_topic),
        bars=topic(settings.bars_topic),
        priced_ticks=topic(f"{settings.ticks_topic}-priced"),
        rollups=topic(f"{settings.bars_topic}-rollups"),
    )
