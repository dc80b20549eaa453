"""The bars of every configured interval for one underlying: ticks into the finest aggregator, coarser bars
combined from its bars.

Only the finest interval (1 minute) aggregates ticks (``aggregator``); 5- and 15-minute bars are combined
from its closed and corrected bars (``combine``), so a coarse bar always equals its fine bars and the state
holds no more than the finest interval's open ticks and late window.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.core.bars.aggregator import BarAggregator
from pipeline.core.bars.combine import BarCombiner
from pipeline.core.state import State, nest, sub


class IntervalBars:
    """Bars of ``intervals_s`` (seconds; the smallest is aggregated from ticks, the others combined)."""

    def __init__(self, intervals_s: Sequence[int], grace_s: float, late_window_s: float) -> None:
        finest = min(intervals_s)
        self._closed: list[np.ndarray] = []
        self.aggregator = BarAggregator(finest, self._closed.append, grace_s=grace_s, late_window_s=late_window_s,
                                        late_rule_interval_s=finest)
        self.combiners = [BarCombiner(interval, finest) for interval in sorted(intervals_s) if interval != finest]

    def add(self, ticks: np.ndarray) -> tuple[np.ndarray | None, dict[str, int]]:
        """Aggregate priced ticks (receive order); (bars of every interval closed or corrected by them, what
        the aggregator counted for them: ``duplicates``, ``late_corrections``, ``too_late_dropped``)."""
        before = dict(self.aggregator.stats)
        self.aggregator.add_ticks(ticks)
        after = self.aggregator.stats
        counts = {name: after[name] - before[name] for name in ("duplicates", "late_corrections", "too_late_dropped")}
        return self._take_closed(), counts

    def advance(self, exchange_ts: int) -> np.ndarray | None:
        """The exchange clock reached ``exchange_ts`` (epoch s): the bars that closes, every interval."""
        self.aggregator.advance(exchange_ts)
        return self._take_closed()

    def event_time(self) -> int | None:
        """The watermark (epoch s): the newest exchange time seen; None before the first tick."""
        return self.aggregator.event_time()

    def _take_closed(self) -> np.ndarray | None:
        """The fine bars emitted since the last call and the coarse bars they close or correct (None: none)."""
        fine = np.concatenate(self._closed) if self._closed else None
        self._closed.clear()
        parts = [] if fine is None else [fine]
        closed_before, free_limit = self.aggregator.closed_before(), self.aggregator.free_limit()
        for combiner in self.combiners:
            coarse = combiner.add(fine, closed_before, free_limit)
            if coarse is not None:
                parts.append(coarse)
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def to_state(self) -> State:
        state = nest("fine", self.aggregator.to_state())
        for combiner in self.combiners:
            state.update(nest(f"combine{combiner.interval_s}", combiner.to_state()))
        return state

    def restore(self, state: State) -> None:
        self.aggregator.restore(sub(state, "fine"))
        for combiner in self.combiners:
            combiner.restore(sub(state, f"combine{combiner.interval_s}"))


__all__ = ["IntervalBars"]
