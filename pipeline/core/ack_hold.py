"""Hold processed Kafka records until the bars they fed are closed: restart-safe acks.

Pure core: no I/O, no Faust. The process agent keeps open bars only in memory.
If it acked a ``ticks`` record as soon as it was processed, a restarted worker
(or the new owner of a moved partition) would resume after that record and
later emit an incomplete bar for every bucket that was open. So a record is
acked only when it is *safe*: all its ticks are older than the underlying's
replay horizon (:func:`replay_horizon`: the oldest exchange time any of its
aggregators still needs to rebuild its open bars). Replaying from the first
unsafe record then rebuilds every open bar completely; the bars it re-emits for
buckets that were already closed are partial "warm-up" versions with the same
``last_recv_ts`` and fewer ticks, which the bars upsert keeps out.

Acks are released in the order the records were delivered *per lane* (a Kafka
partition), not just per underlying: Faust commits the acked prefix of a
partition, but with a hole exactly at the committed offset (or before the first
commit) faust-streaming 0.15.3 commits past it (``Consumer._new_offset`` only
treats ``min(acked) - committed > 1`` as a hole). A record behind a held record
of another underlying in the same partition therefore waits for it; its own
safety is still judged by its own underlying's horizon.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

from pipeline.core.bars.aggregator import BarAggregator

E = TypeVar("E")


def replay_horizon(aggregators: Iterable[BarAggregator]) -> int | None:
    """The oldest ``BarAggregator.replay_from()`` of the aggregators; None when none has open bars."""
    points = [p for p in (a.replay_from() for a in aggregators) if p is not None]
    return min(points) if points else None


class AckHold(Generic[E]):
    """FIFO per lane of processed records waiting to be acked.

    ``add(lane, item, group, max_ts)``: a processed record; ``group`` (the
    underlying) and ``max_ts`` (the newest exchange time of its ticks) decide
    when it is safe; ``max_ts=None`` (a bad or skipped record, no ticks) is safe
    at once. ``release(horizon)`` pops and returns, lane by lane, the longest
    prefix of safe records, where a record is safe when ``horizon(group)`` is
    None (nothing open) or ``max_ts < horizon(group)``. ``horizon`` is called at
    most once per group per ``release``.
    """

    def __init__(self) -> None:
        self._lanes: dict[Hashable, deque[tuple[E, Hashable, int | None]]] = {}

    def add(self, lane: Hashable, item: E, group: Hashable = None, max_ts: int | None = None) -> None:
        self._lanes.setdefault(lane, deque()).append((item, group, max_ts))

    def release(self, horizon: Callable[[Hashable], int | None]) -> list[E]:
        known: dict[Hashable, int | None] = {}
        out: list[E] = []
        for lane, queue in list(self._lanes.items()):
            while queue:
                item, group, max_ts = queue[0]
                if max_ts is not None:
                    if group not in known:
                        known[group] = horizon(group)
                    h = known[group]
                    if h is not None and max_ts >= h:
                        break
                queue.popleft()
                out.append(item)
            if not queue:
                del self._lanes[lane]
        return out

    def forget(self, lanes: Iterable[Hashable]) -> int:
        """Drop what is held for ``lanes`` (revoked partitions: their records go to the next owner)."""
        return sum(len(self._lanes.pop(lane, ())) for lane in lanes)

    def held(self) -> int:
        return sum(len(q) for q in self._lanes.values())


__all__ = ["AckHold", "replay_horizon"]
