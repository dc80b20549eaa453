"""The Checkpointer's ordering rules in-process: acks in partition order only once a saved checkpoint covers
them, exact skip-below after a restore, revoke during a checkpoint, a failed save kept for the next one.

The engines are real (an index of one instrument); the store is an in-memory dict and the acks a list, the
two seams the worker fills with PostgreSQL and Faust (``tests/agents/test_worker_restart.py`` runs the real
ones)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from worker_helpers import NIFTY_INDEX, index_ticks

from agents.checkpointing import Checkpointer
from pipeline.core.engines import Engines
from pipeline.core.outputs import EngineConfig
from pipeline.records.instruments import InstrumentIndex
from sinks.checkpoint_store import StoredCheckpoint

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass(frozen=True)
class Event:
    offset: int


class MemoryStore:
    """A checkpoint store in a dict; ``fail`` makes the next saves raise; ``gate`` holds a save until set."""

    def __init__(self) -> None:
        self.saved: dict[Any, StoredCheckpoint] = {}
        self.fail = 0
        self.gate: asyncio.Event | None = None

    async def load(self, tp: Any) -> StoredCheckpoint | None:
        return self.saved.get(tp)

    async def save(self, tp: Any, next_offset: int, state: bytes) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise ConnectionResetError("the database went away")
        self.saved[tp] = StoredCheckpoint(next_offset, 4, state)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


TICKS = index_ticks(0, 299)
INDEX = InstrumentIndex.from_rows([NIFTY_INDEX])
P0, P1 = TP("ticks", 0), TP("ticks", 1)


def _checkpointer(store: MemoryStore, clock: Clock | None = None) -> tuple[Checkpointer, list[int], list[str]]:
    acked: list[int] = []
    flushed: list[str] = []

    async def flush() -> None:
        flushed.append("flush")

    async def ack(event: Event) -> None:
        acked.append(event.offset)

    engines = Engines(EngineConfig(), INDEX)
    checkpoints = Checkpointer(engines, store, flush, interval_s=5.0, monotonic=clock or Clock(),
                               wall=lambda: float(TICKS["exchange_ts"].max()))
    checkpoints.ack = ack
    return checkpoints, acked, flushed


async def _feed(checkpoints: Checkpointer, tp: TP, offsets: range) -> None:
    """Process one record per offset (one second of ticks each) the way the agent does."""
    for offset in offsets:
        async with checkpoints.lock:
            if await checkpoints.admit(tp, offset):
                checkpoints.engines.process("NIFTY", TICKS[offset:offset + 1])
                checkpoints.processed(tp, offset, Event(offset), "NIFTY")


async def test_records_are_acked_in_order_only_after_a_saved_checkpoint_covers_them() -> None:
    store = MemoryStore()
    checkpoints, acked, flushed = _checkpointer(store)
    await _feed(checkpoints, P0, range(0, 10))
    assert acked == [] and checkpoints.partitions[P0].next_offset == 10
    await checkpoints.take()
    assert flushed == ["flush"]  # the producer is flushed before the snapshot
    assert store.saved[P0].next_offset == 10 and acked == list(range(10))
    await _feed(checkpoints, P0, range(10, 15))
    await checkpoints.take()
    assert acked == list(range(15)) and checkpoints.partitions[P0].saved == 15
    await checkpoints.take()  # nothing new: no second save
    assert flushed == ["flush", "flush"]


async def test_a_failed_save_keeps_its_records_unacked_until_the_next_save_covers_them() -> None:
    store = MemoryStore()
    checkpoints, acked, _ = _checkpointer(store)
    await _feed(checkpoints, P0, range(0, 6))
    store.fail = 1
    await checkpoints.take()
    assert acked == [] and P0 not in store.saved and len(checkpoints.partitions[P0].held) == 6
    await _feed(checkpoints, P0, range(6, 8))
    await checkpoints.take()
    assert acked == list(range(8)) and store.saved[P0].next_offset == 8  # in order, nothing lost


async def test_a_restored_partition_skips_exactly_the_records_its_checkpoint_reflects() -> None:
    store = MemoryStore()
    first, _, _ = _checkpointer(store)
    await _feed(first, P0, range(0, 120))
    await first.take()
    reference = first.engines.get("NIFTY").to_state()

    successor, acked, _ = _checkpointer(store)
    assert not await successor.admit(P0, 100)  # below next_offset: reflected, acked by the agent and skipped
    assert not await successor.admit(P0, 119)
    assert await successor.admit(P0, 120)
    restored = successor.engines.get("NIFTY").to_state()
    assert restored["bars/fine/watermark"] == reference["bars/fine/watermark"]
    assert successor.partitions[P0].underlyings == {"NIFTY"} and acked == []


async def test_a_refused_checkpoint_starts_the_partition_fresh_from_the_committed_offset() -> None:
    store = MemoryStore()
    store.saved[P0] = StoredCheckpoint(50, 3, b"SFCP\x00\x03not ours any more")
    checkpoints, _, _ = _checkpointer(store)
    assert await checkpoints.admit(P0, 10)  # nothing reflected: every record is processed
    assert checkpoints.engines.underlyings() == [] and checkpoints.partitions[P0].skip_below == 0


async def test_only_the_partition_whose_checkpoint_is_oldest_and_due_is_taken() -> None:
    store, clock = MemoryStore(), Clock()
    checkpoints, _, _ = _checkpointer(store, clock)
    await _feed(checkpoints, P0, range(0, 3))
    await _feed(checkpoints, P1, range(0, 3))
    await checkpoints.take_oldest_due()
    assert len(store.saved) == 1
    await checkpoints.take_oldest_due()  # the other one, never attempted
    assert set(store.saved) == {P0, P1}
    await _feed(checkpoints, P0, range(3, 5))
    clock.now += 1.0
    await checkpoints.take_oldest_due()  # progress, but taken 1 s ago: not due
    assert store.saved[P0].next_offset == 3
    clock.now += 5.0
    await checkpoints.take_oldest_due()
    assert store.saved[P0].next_offset == 5


async def test_a_revoke_during_a_checkpoint_waits_for_it_and_forgets_the_partition_after() -> None:
    store = MemoryStore()
    store.gate = asyncio.Event()
    checkpoints, acked, _ = _checkpointer(store)
    await _feed(checkpoints, P0, range(0, 4))
    taking = asyncio.create_task(checkpoints.take())
    await asyncio.sleep(0.01)  # the snapshot is taken; the save waits on the gate
    revoking = asyncio.create_task(checkpoints.revoke([P0]))
    await asyncio.sleep(0.01)
    assert not revoking.done() and P0 in checkpoints.partitions  # one take at a time: acks stay in order
    store.gate.set()
    await asyncio.gather(taking, revoking)
    assert acked == [0, 1, 2, 3] and store.saved[P0].next_offset == 4
    assert P0 not in checkpoints.partitions and checkpoints.engines.underlyings() == []


async def test_a_revoked_partitions_last_records_are_checkpointed_and_acked_first() -> None:
    store = MemoryStore()
    checkpoints, acked, _ = _checkpointer(store)
    await _feed(checkpoints, P0, range(0, 7))
    await checkpoints.revoke([P0, P1])  # P1 was never seen: nothing to do for it
    assert acked == list(range(7)) and store.saved[P0].next_offset == 7 and checkpoints.partitions == {}
    assert list(store.saved) == [P0]
