"""Checkpoints of the process agent, per ``ticks`` partition: restore on first sight, save every few seconds.

Contract (docs/design.md "State and recovery"): a partition's checkpoint is the state of the
underlyings it carries after every record up to ``next_offset - 1``, saved in
PostgreSQL (``sinks.checkpoint_store``). Records are acked, in partition order,
only once a saved checkpoint covers them, so committed offsets trail the head
by about ``checkpoint_interval_s`` plus Faust's commit interval, and never pass
state that is not durable. Before a snapshot the Kafka producer is flushed:
every bar, rollup and priced tick the state says was sent is in Kafka.

A worker that sees a partition for the first time (start, restart, rebalance)
loads its checkpoint and replaces those underlyings' state with it; the
records it is then given below ``next_offset`` (committed offsets can lag the
checkpoint by a commit interval) are already reflected and are skipped
exactly, not reprocessed. No checkpoint: the partition starts fresh. A
checkpoint that cannot be restored here (another format, other bar settings)
is logged and counted, and the partition starts fresh from the committed
offset. On revoke and on shutdown the partitions are checkpointed once more.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import asyncpg
import faust
from loguru import logger

from agents.resources import WorkerResources
from pipeline.core.checkpoint import FORMAT, CheckpointError
from pipeline.core.processor import TickProcessor
from pipeline.runtime import metrics
from pipeline.runtime.backoff import retry_forever
from pipeline.runtime.settings import Settings
from sinks.checkpoint_store import CheckpointKey, load_checkpoint, save_checkpoint

Ack = Callable[[Any], Awaitable[Any]]


class Checkpointer:
    """Held events, offsets and underlyings per ticks partition (``tp``), and the checkpoints of them.

    ``lock`` is held by the agent while it processes one record and by :meth:`take` while it
    snapshots, so a snapshot always reflects whole records.
    """

    def __init__(self, app: faust.App, settings: Settings, resources: WorkerResources, processor: TickProcessor) -> None:
        self.app = app
        self.settings = settings
        self.resources = resources
        self.processor = processor
        self.lock = asyncio.Lock()
        self._take_lock = asyncio.Lock()  # one take at a time: acks stay in partition order
        self.ack: Ack | None = None  # the agent's manual ack, set when its stream starts
        self._held: dict[Any, list[Any]] = {}
        self._next: dict[Any, int] = {}  # first offset the in-memory state does not reflect
        self._saved: dict[Any, int] = {}  # next_offset of the newest saved checkpoint
        self._attempted_at: dict[Any, float] = {}  # monotonic time of each partition's last checkpoint attempt
        self._skip_below: dict[Any, int] = {}
        self._underlyings: dict[Any, set[str]] = {}
        self._restored: set[Any] = set()

    def _key(self, tp: Any) -> CheckpointKey:
        return CheckpointKey(self.settings.app_id, tp.topic, tp.partition)

    # -- the agent's side (under ``lock``) ---------------------------------------------------

    async def admit(self, tp: Any, offset: int) -> bool:
        """Restore ``tp`` on first sight; False when the record is already reflected (ack it, skip it)."""
        if tp not in self._restored:
            await self._restore(tp)
        return offset >= self._skip_below.get(tp, 0)

    def processed(self, tp: Any, offset: int, event: Any, underlying: str | None) -> None:
        self._held.setdefault(tp, []).append(event)
        self._next[tp] = offset + 1
        if underlying is not None:
            self._underlyings.setdefault(tp, set()).add(underlying)
        metrics.UNCHECKPOINTED_RECORDS.set(sum(len(h) for h in self._held.values()))

    # -- checkpoints -------------------------------------------------------------------------

    async def take_oldest_due(self) -> None:
        """Checkpoint the one partition whose last checkpoint attempt is oldest, once that is at least
        ``checkpoint_interval_s`` ago. Called often (a timer): partitions are checkpointed one at a time,
        spread over the interval, so the live path pauses for one partition's snapshot, not all of them."""
        now = time.monotonic()
        due = [tp for tp in self._next if self._next[tp] > self._saved.get(tp, -1)
               and now - self._attempted_at.get(tp, -math.inf) >= self.settings.checkpoint_interval_s]
        if due:
            await self.take([min(due, key=lambda tp: self._attempted_at.get(tp, -math.inf))])

    async def take(self, tps: Iterable[Any] | None = None) -> None:
        """Checkpoint the partitions with unsaved progress, then ack what the saved ones cover."""
        async with self._take_lock:
            async with self.lock:
                wanted = list(self._next) if tps is None else [tp for tp in tps if tp in self._next]
                due = [tp for tp in wanted if self._next[tp] > self._saved.get(tp, -1)]
                if not due:
                    return
                started = time.perf_counter()
                await self.app.producer.flush()  # what the state says was sent is in Kafka
                res = await self.resources.get()
                snaps = [(tp, self._next[tp], self.processor.snapshot(self._underlyings.get(tp, ()), res.pricer),
                          self._held.pop(tp, [])) for tp in due]
                metrics.CHECKPOINT_PAUSE_SECONDS.observe(time.perf_counter() - started)
            for tp, next_offset, blob, events in snaps:
                await self._save(res.pool, tp, next_offset, blob, events)
            metrics.CHECKPOINT_SECONDS.observe(time.perf_counter() - started)
            metrics.UNCHECKPOINTED_RECORDS.set(sum(len(h) for h in self._held.values()))

    async def _save(self, pool: Any, tp: Any, next_offset: int, blob: bytes, events: list[Any]) -> None:
        self._attempted_at[tp] = time.monotonic()
        try:
            await save_checkpoint(pool, self.settings.pg_schema, self._key(tp), next_offset, FORMAT, blob)
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
            metrics.CHECKPOINTS.labels("failed").inc()
            logger.warning("checkpoint of {} failed ({}: {}); its {} records stay unacked, retried at the next one",
                           tp, type(exc).__name__, exc, len(events))
            self._held[tp] = events + self._held.get(tp, [])
            return
        self._saved[tp] = next_offset
        metrics.CHECKPOINTS.labels("saved").inc()
        metrics.CHECKPOINT_BYTES.labels(str(tp.partition)).set(len(blob))
        for event in events:
            await self.ack(event)

    async def _restore(self, tp: Any) -> None:
        self._restored.add(tp)
        res = await self.resources.get()

        def failed(exc: BaseException, delay: float) -> None:
            logger.warning("cannot load the checkpoint of {} ({}); retrying in {:.0f}s", tp, type(exc).__name__, delay)

        try:
            stored = await retry_forever(lambda: load_checkpoint(res.pool, self.settings.pg_schema, self._key(tp)),
                                         retry_on=(OSError, asyncio.TimeoutError, asyncpg.InterfaceError),
                                         on_failure=failed)
        except asyncpg.PostgresError as exc:
            metrics.CHECKPOINTS.labels("refused").inc()
            logger.error("cannot read checkpoints ({}: {}); run `strikeflow migrate`; {} starts fresh",
                         type(exc).__name__, exc, tp)
            return
        if stored is None:
            metrics.CHECKPOINTS.labels("none").inc()
            return
        try:
            names = self.processor.restore(stored.state, res.pricer, time.time())
        except CheckpointError as exc:
            metrics.CHECKPOINTS.labels("refused").inc()
            logger.error("the checkpoint of {} cannot be restored here ({}); it starts fresh from the committed "
                         "offset", tp, exc)
            return
        self._underlyings[tp] = set(names)
        self._skip_below[tp] = self._saved[tp] = self._next[tp] = stored.next_offset
        metrics.CHECKPOINTS.labels("restored").inc()
        logger.info("restored {} from its checkpoint at offset {} ({} bytes): {}", tp, stored.next_offset,
                    len(stored.state), ", ".join(names) or "no underlyings")

    async def revoke(self, tps: Iterable[Any]) -> None:
        """The partitions move away: checkpoint them once more, then forget them and their underlyings."""
        tps = [tp for tp in tps if tp in self._restored or tp in self._next]
        if not tps:
            return
        try:
            await self.take(tps)
        except Exception as exc:  # noqa: BLE001 - the next owner replays from the last saved checkpoint
            logger.warning("final checkpoint of {} failed ({}: {})", tps, type(exc).__name__, exc)
        async with self.lock:
            for tp in tps:
                names = self._underlyings.pop(tp, set())
                self.processor.drop(names)
                for table in (self._held, self._next, self._saved, self._skip_below, self._attempted_at):
                    table.pop(tp, None)
                self._restored.discard(tp)
