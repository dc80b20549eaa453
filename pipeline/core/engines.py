"""The engines of the underlyings one worker owns, over the worker's instrument index.

``Engines`` is the one owner of the process agent's state: an :class:`~pipeline.core.engine.UnderlyingEngine`
per underlying, created on its first record and dropped when its partition moves away; the instrument
index they price against (a refresh rebases every engine); and checkpoints of any set of them
(``pipeline.core.checkpoint``). Pure: no I/O, no clock (the restore's "now" is the caller's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from pipeline.core.checkpoint import (
    CheckpointError,
    decode_checkpoint,
    encode_checkpoint,
)
from pipeline.core.engine import UnderlyingEngine
from pipeline.core.outputs import EngineConfig, EngineOutputs, SeedRequest
from pipeline.core.state import StateError
from pipeline.records.instruments import InstrumentIndex


class Engines:
    """Every underlying's engine in one worker (see the module docstring)."""

    def __init__(self, config: EngineConfig, index: InstrumentIndex) -> None:
        self.config = config
        self.index = index
        self._engines: dict[str, UnderlyingEngine] = {}

    def underlyings(self) -> list[str]:
        return sorted(self._engines)

    def get(self, underlying: str) -> UnderlyingEngine:
        """The underlying's engine, created (empty) on first use."""
        engine = self._engines.get(underlying)
        if engine is None:
            engine = self._engines[underlying] = UnderlyingEngine(underlying, self.config, self.index)
        return engine

    def rebase(self, index: InstrumentIndex) -> None:
        """A refreshed instrument index for every engine (book entries of instruments still listed are kept)."""
        self.index = index
        for engine in self._engines.values():
            engine.rebase(index)

    def seed_requests(self, underlying: str, ticks: np.ndarray) -> list[SeedRequest]:
        return self.get(underlying).seed_requests(ticks)

    def seed(self, underlying: str, interval_s: int, bars: np.ndarray) -> None:
        self.get(underlying).seed(interval_s, bars)

    def process(self, underlying: str, ticks: np.ndarray) -> EngineOutputs:
        """The engine's :meth:`~UnderlyingEngine.process`. If it raises, the error propagates to the caller's
        error policy (the record goes to the dead letters) and no part of the batch stays: an engine that
        failed before changing anything is kept as it was, one that may hold part of the batch (``broken``) is
        discarded, and the underlying starts fresh with its next record."""
        return self._guarded(underlying, lambda engine: engine.process(ticks))

    def advance(self, underlying: str, exchange_ts: int) -> EngineOutputs:
        """A clock record (same failure rule as :meth:`process`)."""
        return self._guarded(underlying, lambda engine: engine.advance(exchange_ts))

    def _guarded(self, underlying: str, call: Callable[[UnderlyingEngine], EngineOutputs]) -> EngineOutputs:
        """``call`` the underlying's engine; discard the engine if the call left it ``broken``."""
        engine = self.get(underlying)
        try:
            return call(engine)
        finally:
            if engine.broken:
                self._engines.pop(underlying, None)

    def snapshot(self, underlyings: Iterable[str]) -> bytes:
        """A checkpoint of these underlyings' engines (those this worker has)."""
        return encode_checkpoint({u: self._engines[u].to_state() for u in sorted(set(underlyings))
                                  if u in self._engines})

    def restore(self, blob: bytes, now_s: float = float("inf")) -> list[str]:
        """Replace the engines of a checkpoint's underlyings by it; the underlyings restored.

        Raises :class:`CheckpointError` (nothing changed) when it was taken with other bar settings or another
        format, or when its event time is more than ``max_clock_skew_s`` ahead of ``now_s`` (the caller's
        clock, epoch s): a watermark poisoned by a far-future tick is never brought back."""
        restored: dict[str, UnderlyingEngine] = {}
        skew = self.config.bars.max_clock_skew_s
        for name, state in decode_checkpoint(blob).items():
            try:
                engine = UnderlyingEngine.from_state(name, self.config, self.index, state)
            except StateError as exc:
                raise CheckpointError(str(exc)) from None
            event_time = engine.event_time()
            if event_time is not None and event_time > now_s + skew:
                raise CheckpointError(f"{name}'s event time {event_time} is more than {skew:.0f}s ahead of the "
                                      f"clock ({now_s:.0f})")
            restored[name] = engine
        self._engines.update(restored)
        return sorted(restored)

    def drop(self, underlyings: Iterable[str]) -> None:
        """Forget these underlyings' engines (their partition moved to another worker)."""
        for underlying in underlyings:
            self._engines.pop(underlying, None)


__all__ = ["Engines"]
