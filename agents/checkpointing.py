"""Checkpoints of the process agent, per ``ticks`` partition: restore on first sight, save every few seconds.

Contract (docs/design.md "State and recovery"): a partition's checkpoint is the state of the
underlyings it carries after every record up to ``next_offset - 1``, saved in
PostgreSQL (``sinks.checkpoint_store``). Records are acked, in partition order,
only once a saved checkpoint covers them, so committed offsets trail the head
by about ``checkpoint_interval_s`` plus Faust's commit interval, and never pass
state that is not durable. Before a snapshot the Kafka producer is flushed:
every bar, rollup and priced tick the state says was sent is in Kafka.

A worker that sees a partition for the first time (start, restart, rebalance)
loads its checkpoint and replaces those underlyings' engines with it; the
records it is then given below ``next_offset`` (committed offsets can lag the
checkpoint by a commit interval) are already reflected and are skipped
exactly, not reprocessed. No checkpoint: the partition starts fresh. A
checkpoint that cannot be restored here (another format, other bar settings)
is logged with its reason and counted, and the partition starts fresh from the
committed offset. On revoke and on shutdown the partitions are checkpointed once more.

Each partition's progress is one :class:`PartitionProgress`; the store is a seam
(:class:`CheckpointStore`), so the ordering rules are unit-tested without Kafka or PostgreSQL.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from loguru import logger

from agents.resources import WorkerResources
from pipeline.core.checkpoint import FORMAT, CheckpointError
from pipeline.core.engines import Engines
from pipeline.runtime import metrics
from pipeline.runtime.backoff import retry_forever
from pipeline.runtime.errors import is_transient
from pipeline.runtime.settings import Settings
from sinks.checkpoint_store import (
    CheckpointKey,
    StoredCheckpoint,
    load_checkpoint,
    save_checkpoint,
)

Ack = Callable[[Any], Awaitable[Any]]


class CheckpointStore(Protocol):
    """Where a partition's checkpoint lives (``sinks.checkpoint_store`` in the worker)."""

    async def load(self, tp: Any) -> StoredCheckpoint | None: ...

    async def save(self, tp: Any, next_offset: int, state: bytes) -> None: ...


@dataclass
class PartitionProgress:
    """One ``ticks`` partition as the worker sees it.

    ``held``: events processed but not yet covered by a saved checkpoint (acked in order once one is);
    ``next_offset``: the first offset the in-memory state does not reflect (None: nothing processed or
    restored yet); ``saved``: ``next_offset`` of the newest saved checkpoint (-1: none); ``skip_below``:
    records below it are reflected by the restored checkpoint; ``attempted_at``: monotonic seconds of the last
    checkpoint attempt; ``underlyings``: those its records carried."""

    held: list[Any] = field(default_factory=list)
    next_offset: int | None = None
    saved: int = -1
    skip_below: int = 0
    attempted_at: float = -math.inf
    underlyings: set[str] = field(default_factory=set)

    @property
    def unsaved(self) -> bool:
        """Progress past the newest saved checkpoint."""
        return self.next_offset is not None and self.next_offset > self.saved


class Checkpointer:
    """The partitions' progress and their checkpoints (see the module docstring).

    ``lock`` is held by the agent while it processes one record and by :meth:`take` while it snapshots, so a
    snapshot always reflects whole records. ``flush``: flushes the Kafka producer; ``interval_s``: seconds
    between a partition's checkpoints; ``monotonic``/``wall``: the clocks (seconds)."""

    def __init__(self, engines: Engines, store: CheckpointStore, flush: Callable[[], Awaitable[Any]],
                 interval_s: float, *, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.engines = engines
        self.store = store
        self.flush = flush
        self.interval_s = interval_s
        self.monotonic = monotonic
        self.wall = wall
        self.lock = asyncio.Lock()
        self._take_lock = asyncio.Lock()  # one take at a time: acks stay in partition order
        self.ack: Ack | None = None  # the agent's manual ack, set when its stream starts
        self.partitions: dict[Any, PartitionProgress] = {}

    # -- the agent's side (under ``lock``) ---------------------------------------------------

    async def admit(self, tp: Any, offset: int) -> bool:
        """Restore ``tp`` on first sight; False when the record is already reflected (ack it, skip it)."""
        progress = self.partitions.get(tp)
        if progress is None:
            progress = self.partitions[tp] = PartitionProgress()
            await self._restore(tp, progress)
        return offset >= progress.skip_below

    def processed(self, tp: Any, offset: int, event: Any, underlying: str | None) -> None:
        progress = self.partitions[tp]
        progress.held.append(event)
        progress.next_offset = offset + 1
        if underlying is not None:
            progress.underlyings.add(underlying)
        self._gauge()

    # -- checkpoints -------------------------------------------------------------------------

    async def take_oldest_due(self) -> None:
        """Checkpoint the one partition whose last checkpoint attempt is oldest, once that is at least
        ``interval_s`` ago. Called often (a timer): partitions are checkpointed one at a time, spread over the
        interval, so the live path pauses for one partition's snapshot, not all of them."""
        now = self.monotonic()
        due = [(p.attempted_at, tp) for tp, p in self.partitions.items()
               if p.unsaved and now - p.attempted_at >= self.interval_s]
        if due:
            await self.take([min(due, key=lambda pair: pair[0])[1]])

    async def take(self, tps: Iterable[Any] | None = None) -> None:
        """Checkpoint the partitions with unsaved progress, then ack what the saved ones cover."""
        async with self._take_lock:
            async with self.lock:
                wanted = list(self.partitions) if tps is None else [tp for tp in tps if tp in self.partitions]
                due = [tp for tp in wanted if self.partitions[tp].unsaved]
                if not due:
                    return
                started = time.perf_counter()
                await self.flush()  # what the state says was sent is in Kafka
                snaps = []
                for tp in due:
                    progress = self.partitions[tp]
                    held, progress.held = progress.held, []
                    snaps.append((tp, progress.next_offset, self.engines.snapshot(progress.underlyings), held))
                metrics.CHECKPOINT_PAUSE_SECONDS.observe(time.perf_counter() - started)
            for tp, next_offset, blob, events in snaps:
                await self._save(tp, next_offset, blob, events)
            metrics.CHECKPOINT_SECONDS.observe(time.perf_counter() - started)
            self._gauge()

    async def _save(self, tp: Any, next_offset: int, blob: bytes, events: list[Any]) -> None:
        progress = self.partitions.get(tp)
        if progress is not None:
            progress.attempted_at = self.monotonic()
        try:
            await self.store.save(tp, next_offset, blob)
        except Exception as exc:  # noqa: BLE001 - any failure: keep the records unacked, try at the next one
            metrics.CHECKPOINTS.labels("failed").inc()
            logger.warning("checkpoint of {} failed ({}: {}); its {} records stay unacked, retried at the next one",
                           tp, type(exc).__name__, exc, len(events))
            if progress is not None:
                progress.held[:0] = events
            return
        if progress is not None:
            progress.saved = max(progress.saved, next_offset)
        metrics.CHECKPOINTS.labels("saved").inc()
        metrics.CHECKPOINT_BYTES.labels(str(tp.partition)).set(len(blob))
        for event in events:
            await self.ack(event)

    async def _restore(self, tp: Any, progress: PartitionProgress) -> None:
        stored = await self._load(tp)
        if stored is None:
            return
        try:
            names = self.engines.restore(stored.state, self.wall())
        except CheckpointError as exc:
            metrics.CHECKPOINTS.labels("refused").inc()
            logger.error("the checkpoint of {} cannot be restored here ({}); it starts fresh from the committed "
                         "offset", tp, exc)
            return
        progress.underlyings = set(names)
        progress.skip_below = progress.saved = progress.next_offset = stored.next_offset
        metrics.CHECKPOINTS.labels("restored").inc()
        logger.info("restored {} from its checkpoint at offset {} ({} bytes): {}", tp, stored.next_offset,
                    len(stored.state), ", ".join(names) or "no underlyings")

    async def _load(self, tp: Any) -> StoredCheckpoint | None:
        """The stored checkpoint. The one error policy: a transient failure (the database down, the schema not
        migrated yet) is retried with the one backoff; anything else starts the partition fresh, logged."""
        def failed(exc: BaseException, delay: float) -> None:
            logger.warning("cannot load the checkpoint of {} ({}); retrying in {:.1f}s", tp, type(exc).__name__, delay)

        try:
            stored = await retry_forever(lambda: self.store.load(tp), retry_on=is_transient, on_failure=failed,
                                         start_s=0.5, max_s=10.0)
        except Exception as exc:  # noqa: BLE001 - poison: not worth waiting for
            metrics.CHECKPOINTS.labels("refused").inc()
            logger.error("cannot read the checkpoint of {} ({}: {}); it starts fresh", tp, type(exc).__name__, exc)
            return None
        if stored is None:
            metrics.CHECKPOINTS.labels("none").inc()
        return stored

    async def revoke(self, tps: Iterable[Any]) -> None:
        """The partitions move away: checkpoint them once more, then forget them and their underlyings."""
        tps = [tp for tp in tps if tp in self.partitions]
        if not tps:
            return
        try:
            await self.take(tps)
        except Exception as exc:  # noqa: BLE001 - the next owner replays from the last saved checkpoint
            logger.warning("final checkpoint of {} failed ({}: {})", tps, type(exc).__name__, exc)
        async with self.lock:
            for tp in tps:
                progress = self.partitions.pop(tp, None)
                if progress is not None:
                    self.engines.drop(progress.underlyings)
            self._gauge()

    def _gauge(self) -> None:
        metrics.UNCHECKPOINTED_RECORDS.set(sum(len(p.held) for p in self.partitions.values()))


class PostgresCheckpoints:
    """The worker's :class:`CheckpointStore`: ``worker_checkpoints`` in the worker's schema, keyed by app id."""

    def __init__(self, resources: WorkerResources, settings: Settings) -> None:
        self.resources = resources
        self.settings = settings

    def _key(self, tp: Any) -> CheckpointKey:
        return CheckpointKey(self.settings.app_id, tp.topic, tp.partition)

    async def load(self, tp: Any) -> StoredCheckpoint | None:
        res = await self.resources.get()
        return await load_checkpoint(res.pool, self.settings.pg_schema, self._key(tp))

    async def save(self, tp: Any, next_offset: int, state: bytes) -> None:
        res = await self.resources.get()
        await save_checkpoint(res.pool, self.settings.pg_schema, self._key(tp), next_offset, FORMAT, state)


__all__ = ["CheckpointStore", "Checkpointer", "PartitionProgress", "PostgresCheckpoints"]
