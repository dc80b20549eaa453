"""Process agent: one ``ticks`` record (a batch of one underlying, or its exchange clock) in, analytics out.

admit -> decode -> engine -> emit. The computation is the underlying's engine (``pipeline.core.engine``,
pure, tested in-process), owned with every other underlying's by ``pipeline.core.engines.Engines``; the
emitter (``agents.emitter``) hands the results to Redis, Kafka and the metrics. Before an underlying's first
batch its rollups are seeded from the stored bars (``sinks.bar_history``); a token the index does not list
reloads it (``agents.instruments``).

State and recovery (``agents.checkpointing``): the engines are checkpointed per partition every
``checkpoint_interval_s``; a record is acked (its offset committed) once a saved checkpoint covers it, so a
restarted worker, or the next owner of a moved partition, restores the checkpoint and replays only the few
seconds after it; records the checkpoint reflects are skipped exactly. The one error policy: a poison record
(undecodable, or one the engine fails on) goes to the dead letters and the next one is processed; bad
records are acked in partition order like the rest.
"""

from __future__ import annotations

import time
from typing import Any

import faust

from agents.checkpointing import Checkpointer, PostgresCheckpoints
from agents.dead_letters import DeadLetters
from agents.emitter import Emitter
from agents.instruments import WorkerInstruments
from agents.resources import WorkerResources
from agents.topics import Topics
from pipeline.core.engines import Engines
from pipeline.core.outputs import EngineConfig, EngineOutputs
from pipeline.records.columnar import BatchFormatError
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.ticks import decode_ticks_record
from pipeline.runtime import metrics
from pipeline.runtime.settings import Settings
from sinks.bar_history import seed_rollups

SEED_TIMEOUT_S = 10.0


def register_process_agent(app: faust.App, settings: Settings, resources: WorkerResources,
                           topics: Topics, dead: DeadLetters) -> Checkpointer:
    engines = Engines(EngineConfig.from_settings(settings), InstrumentIndex.from_rows([]))
    instruments = WorkerInstruments(engines, settings.pg_schema)
    emitter = Emitter(topics, dead, settings.store_ticks)
    checkpoints = Checkpointer(engines, PostgresCheckpoints(resources, settings), lambda: app.producer.flush(),
                               settings.checkpoint_interval_s)

    @app.agent(topics.ticks, name="process")
    async def process(stream: faust.StreamT) -> None:
        manual = stream.noack()
        checkpoints.ack = manual.ack
        async for event in manual.events():
            tp, offset = event.message.tp, event.message.offset
            async with checkpoints.lock:
                if await checkpoints.admit(tp, offset):
                    outputs = await _process(event.message)
                    checkpoints.processed(tp, offset, event, None if outputs is None else outputs.underlying)
                else:
                    await manual.ack(event)  # the restored checkpoint already reflects it
                resources.progress.processed(tp, offset)

    @app.timer(interval=min(0.5, settings.checkpoint_interval_s / 4))
    async def _checkpoint() -> None:
        # its own task: the agent goes on processing while a checkpoint is saved (it waits only for the snapshot,
        # taken under the lock), and a quiet feed still gets its last records checkpointed and acked; one
        # partition per call, each every checkpoint_interval_s, so the pauses are short and spread
        await checkpoints.take_oldest_due()

    @app.on_partitions_revoked.connect
    async def _revoked(app: faust.App, revoked: set, **_: object) -> None:
        await checkpoints.revoke(tp for tp in revoked if tp.topic == settings.ticks_topic)

    async def _process(message: Any) -> EngineOutputs | None:
        """One ticks record; its outputs when the engine took it, else None (a poison record, dead-lettered)."""
        res = await resources.get()
        try:
            underlying, ticks, clock = decode_ticks_record(message.value)
        except BatchFormatError as exc:
            metrics.BAD_BATCHES.labels(settings.ticks_topic).inc()
            await dead.send(message, "undecodable", exc)
            return None
        await instruments.ensure(res.pool, ticks["instrument_token"])
        if clock is None:
            if len(ticks):
                metrics.TICK_TO_PROCESS.observe(max(time.time() - int(ticks["recv_ts"].max()) / 1e6, 0.0))
            await seed_rollups(engines, underlying, ticks, res.pool, settings.pg_schema, SEED_TIMEOUT_S)
        try:  # a clock record closes a quiet underlying's bars on time
            outputs = engines.process(underlying, ticks) if clock is None else engines.advance(underlying, clock)
        except Exception as exc:  # noqa: BLE001 - one poisoned batch must not stop every underlying
            metrics.BAD_BATCHES.labels(f"{settings.ticks_topic}:process-error").inc()
            await dead.send(message, "process-error", exc)
            return None
        await emitter.emit(outputs, res.publisher, engines.index, message)
        return outputs

    return checkpoints
