"""The conflating front of the Redis publisher: the process agent offers, a background task publishes.

The ``offer_*`` methods never block or raises on Redis trouble; the task publishes as fast
as Redis allows and, when it falls behind, keeps only the newest tick per
instrument (counting what it dropped). Bars and chain rows are never
conflated: each goes through a :class:`BoundedRowQueue` that drops its oldest
batches beyond ``max_pending`` rows (they are still in Kafka and the database).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
from loguru import logger

from pipeline.records.instruments import InstrumentIndex
from pipeline.runtime import metrics
from pipeline.runtime.backoff import Backoff
from pipeline.runtime.clock import SYSTEM_CLOCK, Clock
from pipeline.runtime.errors import is_transient


class Publisher(Protocol):
    """What the conflating front publishes through (``sinks.redis.publisher.RedisPublisher``)."""

    async def publish_ticks(self, underlying: str, ticks: np.ndarray, index: InstrumentIndex | None) -> int: ...

    async def publish_tick_batches(self, batches: list[tuple[str, np.ndarray, InstrumentIndex | None]]) -> int: ...

    async def publish_bars(self, underlying: str, bars: np.ndarray, index: InstrumentIndex | None = None) -> int: ...

    async def publish_chains(self, underlying: str, chain_rows: np.ndarray) -> int: ...

    async def publish_vix(self, underlying: str, vix_rows: np.ndarray) -> int: ...


def latest_per_instrument(ticks: np.ndarray) -> np.ndarray:
    """The newest tick (largest recv_ts) of each instrument, in receive order."""
    if len(ticks) <= 1:
        return ticks
    order = np.lexsort((ticks["recv_ts"], ticks["instrument_token"]))
    tokens = ticks["instrument_token"][order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = tokens[1:] != tokens[:-1]
    keep = order[last]
    keep = keep[np.argsort(ticks["recv_ts"][keep], kind="stable")]
    return ticks[keep]


class BoundedRowQueue:
    """FIFO of ``(underlying, rows)`` batches holding at most ``max_rows`` rows (but always the newest batch).

    ``append`` drops the oldest batches beyond the bound, counts their rows in
    ``dropped`` and returns True when it dropped any. ``peek``/``pop`` take from the front.
    """

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.rows = 0
        self.dropped = 0
        self._items: collections.deque[tuple[str, np.ndarray]] = collections.deque()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        return iter(self._items)

    def append(self, underlying: str, rows: np.ndarray) -> bool:
        self._items.append((underlying, rows))
        self.rows += len(rows)
        dropped = False
        while self.rows > self.max_rows and len(self._items) > 1:
            _, old = self._items.popleft()
            self.rows -= len(old)
            self.dropped += len(old)
            dropped = True
        return dropped

    def peek(self) -> tuple[str, np.ndarray]:
        return self._items[0]

    def pop(self) -> tuple[str, np.ndarray]:
        underlying, rows = self._items.popleft()
        self.rows -= len(rows)
        return underlying, rows


class ConflatingPublisher:
    """Non-blocking front of a ``RedisPublisher`` for the process agent.

    - ``offer_ticks(underlying, ticks, index)`` stores the batch as that underlying's
      pending batch. If one is already pending (a publish is in flight), the two
      are joined: every tick is kept while the pending batch holds at most
      ``conflate_above`` ticks and Redis answers; beyond that, or while Redis
      is failing (it is slower than the feed, or down), they
      are merged keeping only the newest tick per instrument, and the rows
      dropped are added to ``conflated`` (and ``strikeflow_redis_conflated_ticks_total``).
    - ``offer_bars(underlying, bars)`` queues closed bars; they are never
      conflated, published in order. The queue is bounded by ``max_pending`` bar
      rows: beyond it the oldest batches are dropped (counted in ``bars_dropped``,
      logged) — the ``bars`` Kafka topic and the database still have them.
    - ``offer_chains(underlying, chain_rows)`` and ``offer_vix(underlying, vix_rows)``
      likewise queue OI rollup chain rows and volatility-index rows (never conflated,
      published in order on ``chain:<underlying>:<expiry>`` and ``vix:<underlying>``),
      each bounded by ``max_pending`` rows (``chains_dropped`` counts chain rows).
    - A background task publishes whatever is pending. Redis errors are logged
      once per kind until recovery, counted in ``errors`` (and
      ``strikeflow_sink_errors_total{sink="redis"}``). The one error policy
      (``pipeline.runtime.errors``): a transient error (connection, timeout) is
      retried with exponential backoff while pending data keeps conflating; any
      other (a message Redis refuses for its content) drops that batch, logged
      once: it is still in Kafka and the database.
    """

    def __init__(self, publisher: Publisher, *, max_pending: int = 10000, max_backoff_s: float = 2.0,
                 stop_timeout_s: float = 5.0, max_tick_age_s: float | None = None, conflate_above: int = 5000,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        """``max_tick_age_s``: live ticks received longer ago than this (``recv_ts`` vs ``clock()``,
        epoch seconds) are not published and do not touch the snapshot hashes: a worker replaying
        Kafka after a restart must not send dashboards back in time. Counted in ``stale``."""
        self.publisher = publisher
        self.conflate_above = conflate_above
        self.max_tick_age_s = max_tick_age_s
        self.clock = clock
        self.stale = 0
        self.max_pending = max_pending
        self.max_backoff_s = max_backoff_s
        self.stop_timeout_s = stop_timeout_s
        self._ticks: dict[str, tuple[np.ndarray, InstrumentIndex]] = {}
        self._bars = BoundedRowQueue(max_pending)
        self._chains = BoundedRowQueue(max_pending)
        self._vix = BoundedRowQueue(max_pending)
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._logged: set[str] = set()
        self._index: dict[str, InstrumentIndex] = {}  # latest index per underlying, to name bars
        self.conflated = 0
        self.not_newer = 0  # ticks not published: Redis already had a newer one of the instrument
        self._failing = False  # the last publish failed: conflate everything until one succeeds
        self.published_chains = 0
        self.errors = 0
        self.published_ticks = 0
        self.published_bars = 0

    # -- caller side (synchronous, never blocks) --------------------------------

    @property
    def pending_ticks(self) -> int:
        return sum(len(t) for t, _ in self._ticks.values())

    @property
    def pending_bars(self) -> int:
        return self._bars.rows

    @property
    def bars_dropped(self) -> int:
        return self._bars.dropped

    @property
    def chains_dropped(self) -> int:
        return self._chains.dropped

    def offer_ticks(self, underlying: str, ticks: np.ndarray, index: InstrumentIndex) -> None:
        """Make ``ticks`` (PRICED_TICK_DTYPE) the underlying's pending live ticks (joined or conflated with what
        is pending; never blocks)."""
        if self.max_tick_age_s is not None and len(ticks):
            fresh = ticks["recv_ts"] >= (self.clock.time() - self.max_tick_age_s) * 1e6
            if not fresh.all():
                self.stale += int((~fresh).sum())
                metrics.REDIS_STALE.inc(int((~fresh).sum()))
                ticks = ticks[fresh]
        if len(ticks) == 0:
            return
        self._merge_ticks(underlying, ticks, index)
        self._index[underlying] = index
        self._wake.set()

    def offer_bars(self, underlying: str, bars: np.ndarray) -> None:
        """Queue closed bars (never blocks, never conflated; bounded)."""
        self._offer_rows(self._bars, "bars", underlying, bars)

    def offer_chains(self, underlying: str, chain_rows: np.ndarray) -> None:
        """Queue OI rollup chain rows (CHAIN_BAR_DTYPE; never blocks, never conflated; bounded like bars)."""
        self._offer_rows(self._chains, "chain rows", underlying, chain_rows)

    def offer_vix(self, underlying: str, vix_rows: np.ndarray) -> None:
        """Queue volatility-index rows (VOL_INDEX_DTYPE; never blocks, never conflated; bounded like bars)."""
        self._offer_rows(self._vix, "vix rows", underlying, vix_rows)

    def _offer_rows(self, queue: BoundedRowQueue, what: str, underlying: str, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        if queue.append(underlying, rows):
            self._log_once(f"{what}-dropped", "Redis {} queue over {} rows: dropping the oldest {} "
                           "(they are still in Kafka and the database)", what, self.max_pending, what)
        self._wake.set()

    def _merge_ticks(self, underlying: str, ticks: np.ndarray, index: InstrumentIndex) -> None:
        pending = self._ticks.get(underlying)
        if pending is None:
            self._ticks[underlying] = (ticks, index)
            return
        old, _ = pending
        both = np.concatenate([old, ticks])
        if not self._failing and len(both) <= self.conflate_above:  # a publish in flight, not a backlog
            self._ticks[underlying] = (both, index)
            return
        merged = latest_per_instrument(both)
        dropped = len(both) - len(merged)
        if dropped:
            self.conflated += dropped
            metrics.REDIS_CONFLATED.inc(dropped)
        self._ticks[underlying] = (merged, index)

    # -- background task ---------------------------------------------------------

    @property
    def task(self) -> asyncio.Task | None:
        """The publishing task (the worker needs it alive)."""
        return self._task

    def _pending(self) -> bool:
        return bool(self._ticks or self._bars or self._chains or self._vix)

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._stop.clear()
            self._wake = asyncio.Event()
            if self._pending():
                self._wake.set()
            self._task = asyncio.create_task(self._run(), name="redis-conflating-publisher")

    async def stop(self) -> None:
        """Publish what is pending (up to ``stop_timeout_s``), then stop the task."""
        task, self._task = self._task, None
        if task is None:
            if self._pending():
                await self._drain_once()
            return
        self._stop.set()
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), self.stop_timeout_s)
        except asyncio.TimeoutError:
            logger.warning("Redis publisher: {} ticks / {} bars still pending at shutdown, dropped",
                           self.pending_ticks, self.pending_bars)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        except Exception:  # noqa: BLE001 - _run never raises; be safe at shutdown
            logger.exception("Redis publisher task failed")

    async def _run(self) -> None:
        backoff = Backoff(min(0.05, self.max_backoff_s), self.max_backoff_s)
        while True:
            if not (self._pending()):
                if self._stop.is_set():
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            ok = await self._drain_once()
            if ok:
                backoff.reset()
                continue
            if self._stop.is_set():
                return  # one last attempt was made; don't hold shutdown on a dead Redis
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff.next())

    async def _drain_once(self) -> bool:
        """Publish everything pending now; False when Redis failed (the data is put back)."""
        ticks, self._ticks = self._ticks, {}
        if ticks:
            try:
                await self._publish_forward(ticks)
            except Exception as exc:  # noqa: BLE001
                if self._failed(exc, f"ticks of {', '.join(ticks)}"):
                    # Put the batches back; newer offers merged meanwhile win per instrument.
                    for underlying, (batch, index) in ticks.items():
                        self._requeue_ticks(underlying, batch, index)
                    return False
        while self._bars:
            underlying, bars = self._bars.peek()
            try:
                self.published_bars += await self.publisher.publish_bars(underlying, bars, self._index.get(underlying))
            except Exception as exc:  # noqa: BLE001
                if self._failed(exc, f"bars of {underlying}"):
                    return False
            self._bars.pop()
        for queue, publish, what in ((self._chains, self.publisher.publish_chains, "chain rows"),
                                     (self._vix, self.publisher.publish_vix, "vix rows")):
            while queue:
                underlying, rows = queue.peek()
                try:
                    self.published_chains += await publish(underlying, rows)
                except Exception as exc:  # noqa: BLE001
                    if self._failed(exc, f"{what} of {underlying}"):
                        return False
                queue.pop()
        self._failing = False
        if self._logged - {"bars-dropped", "chain rows-dropped", "vix rows-dropped"}:
            logger.info("Redis publishing recovered ({} errors so far)", self.errors)
            self._logged.clear()
        return True

    async def _publish_forward(self, pending: dict[str, tuple[np.ndarray, InstrumentIndex]]) -> None:
        """Publish the pending batches, every underlying in one round trip; Redis keeps only ticks newer than
        what it has of their instruments (``sinks.redis.forward_gate``), the rest count in ``not_newer``."""
        ready = [(underlying, batch, index) for underlying, (batch, index) in pending.items() if len(batch)]
        sent = sum(len(batch) for _, batch, _ in ready)
        published = await self.publisher.publish_tick_batches(ready)
        self.published_ticks += published
        if sent > published:
            self.not_newer += sent - published
            metrics.REDIS_NOT_NEWER.inc(sent - published)

    def _requeue_ticks(self, underlying: str, batch: np.ndarray, index: InstrumentIndex) -> None:
        newer = self._ticks.pop(underlying, None)
        self._ticks[underlying] = (batch, index)
        if newer is not None:
            self._merge_ticks(underlying, *newer)

    def _failed(self, exc: Exception, what: str) -> bool:
        """Count and log (once per kind); True when the failure should be retried."""
        self.errors += 1
        metrics.SINK_ERRORS.labels("redis").inc()
        retry = is_transient(exc)  # the one error policy (pipeline.runtime.errors); poison: dropped, logged once
        self._failing = self._failing or retry
        kind = f"{'retry' if retry else 'drop'}:{type(exc).__name__}"
        if retry:
            self._log_once(kind, "Redis publish of {} failed ({}: {}); retrying with backoff", what,
                           type(exc).__name__, exc)
        else:
            self._log_once(kind, "Redis publish of {} failed with {}: {}; batch dropped", what,
                           type(exc).__name__, exc)
        return retry

    def _log_once(self, kind: str, message: str, *args: Any) -> None:
        if kind in self._logged:
            logger.debug(message, *args)
        else:
            self._logged.add(kind)
            logger.warning(message, *args)
