"""What an underlying's engine is configured with and what it returns (pure data, no behaviour).

``EngineConfig`` is the one frozen settings object of the core: how bars close (``BarConfig``), how
options are priced (``PricingRules``, the risk-free rate) and how the volatility index picks its expiries.
``EngineOutputs`` is everything one batch or clock record produced, handed to the emitter in one piece.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.core.pricing import PricingRules
from pipeline.records.rollups import CHAIN_BAR_DTYPE, STRIKE_BAR_DTYPE, VOL_INDEX_DTYPE
from pipeline.records.ticks import TICK_DTYPE
from pipeline.runtime.settings import Settings


@dataclass(frozen=True)
class BarConfig:
    """How bars close: intervals (seconds), the grace after an interval's end and the late window (seconds);
    and how long a silence in an underlying's receive times is a feed gap (seconds)."""

    intervals_s: Sequence[int] = (60, 300, 900)
    grace_s: float = 2.0
    late_window_s: float = 60.0
    feed_gap_s: float = 5.0
    # a tick whose exchange time is further ahead of its receive time than this is rejected before it can move
    # event time (``records.ticks.implausible_future``); infinite: no bound
    max_clock_skew_s: float = float("inf")

    @classmethod
    def from_settings(cls, settings: Settings) -> BarConfig:
        """The bars configured; a silence as long as the ingestor's dead-socket rule is a feed gap."""
        return cls(tuple(settings.bar_intervals_s), settings.bar_grace_s, settings.late_window_s,
                   settings.kite_silence_timeout_s, settings.max_clock_skew_s)

    @property
    def finest_s(self) -> int:
        """The 1-minute interval every coarser bar is combined from (seconds)."""
        return int(min(self.intervals_s))

    def state_settings(self) -> tuple[tuple[int, ...], float, float]:
        """What an engine's state depends on: the intervals, the grace and the late window (the feed-gap and
        clock-skew rules may change between a checkpoint and its restore)."""
        return tuple(int(i) for i in self.intervals_s), float(self.grace_s), float(self.late_window_s)


@dataclass(frozen=True)
class EngineConfig:
    """Everything an underlying's engine is configured with (see the module docstring). ``r``: the risk-free
    rate, continuous, per year; ``vix_roll_days``: the near expiry of the volatility index rolls this many
    calendar days before expiry; ``vix_min_strikes``: out-of-the-money strikes with bids each side of k0 an
    index row needs."""

    bars: BarConfig = BarConfig()
    rules: PricingRules = PricingRules()
    r: float = 0.065
    vix_roll_days: float = 3.0
    vix_min_strikes: int = 3

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineConfig:
        return cls(BarConfig.from_settings(settings), PricingRules.from_settings(settings), settings.risk_free_rate,
                   settings.vix_roll_days, settings.vix_min_strikes)


@dataclass(frozen=True)
class TickCounts:
    """What the finest interval's aggregator dropped or corrected for one batch, per tick (a tick reaches the
    bars of every interval or of none, so each is counted once)."""

    duplicates: int = 0
    late_corrections: int = 0
    too_late: int = 0
    feed_gap_s: float = 0.0  # > 0: the batch came after this many seconds (receive time) without a tick
    vix_skipped: dict[str, int] = field(default_factory=dict)  # closed minutes without an index row, by reason


@dataclass(frozen=True)
class SeedRequest:
    """Stored bars a rollup needs before its first update: per token, the newest bar of ``interval_s``
    with ``bucket < before`` (epoch seconds)."""

    interval_s: int
    tokens: np.ndarray
    before: int


@dataclass(frozen=True)
class EngineOutputs:
    """One batch's (or clock record's) results for one underlying."""

    underlying: str
    priced: np.ndarray  # PRICED_TICK_DTYPE, the batch in receive order
    bars: np.ndarray | None  # BAR_DTYPE, closed or corrected bars of every interval; None when none
    strike_rows: np.ndarray = field(default_factory=lambda: np.empty(0, STRIKE_BAR_DTYPE))
    chain_rows: np.ndarray = field(default_factory=lambda: np.empty(0, CHAIN_BAR_DTYPE))
    counts: TickCounts = TickCounts()
    vol_index_rows: np.ndarray = field(default_factory=lambda: np.empty(0, VOL_INDEX_DTYPE))
    # TICK_DTYPE: the batch's ticks rejected before they could touch any state (exchange time implausibly far
    # ahead of the receive time); the caller's error policy sends them to the dead letters
    rejected: np.ndarray = field(default_factory=lambda: np.empty(0, TICK_DTYPE))


__all__ = ["BarConfig", "EngineConfig", "EngineOutputs", "SeedRequest", "TickCounts"]
