"""Faust agents: thin routing of batches through the pure core (pipeline.bars, pipeline.rollups, greeks) to sinks."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from pipeline.settings import Settings


@dataclass(frozen=True)
class Topics:
    ticks: faust.TopicT
    bars: faust.TopicT
    priced_ticks: faust.TopicT
    rollups: faust.TopicT


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    def topic(name: str) -> faust.TopicT:
        return app.topic(name, key_serializer="raw", value_serializer="raw", partitions=settings.topic_partitions)

    return Topics(
        ticks=topic(settings.ticks_topic),
        bars=topic(settings.bars_topic),
        priced_ticks=topic(f"{settings.ticks_topic}-priced"),
        rollups=topic(f"{settings.bars_topic}-rollups"),
    )


def register_agents(app: faust.App, settings: Settings, resources) -> Topics:  # noqa: ANN001
    from agents.process import register_process_agent
    from agents.store import register_store_agents

    topics = declare_topics(app, settings)
    register_process_agent(app, settings, resources, topics)
    register_store_agents(app, settings, resources, topics)

    @app.on_partitions_assigned.connect
    async def _assigned(app: faust.App, assigned: set, **_: object) -> None:  # noqa: ANN001
        resources.partitions_assigned = True

    @app.on_before_shutdown.connect
    async def _shutdown(app: faust.App, **_: object) -> None:  # noqa: ANN001
        await resources.close()

    return topics
