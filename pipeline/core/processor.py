"""The process agent's logic as a pure unit: a decoded tick batch in, everything to emit out.

Per underlying (records are keyed by underlying, so one underlying's state
lives in exactly one worker) an :class:`UnderlyingState` holds the bar
aggregators of every interval and the OI rollups. :meth:`TickProcessor.process`
prices a batch (``pipeline.core.pricing``), feeds the aggregators and, when
bars closed or were corrected, the rollups, and returns a
:class:`ProcessResult`: priced ticks, bars, strike and chain rows, and the
counters of what the aggregators dropped. No I/O and no clock: the agent
decodes, sends and acks; time comes only with the ticks.

Restart: before an underlying's first batch the agent asks :meth:`start` which
stored bars the rollups need (one :class:`SeedRequest` per interval), loads
them, and hands them to :meth:`seed` (``pipeline.core.rollups``, "Restart").
:meth:`snapshot` and :meth:`restore` checkpoint the state of some underlyings
(``pipeline.core.checkpoint``): a restored processor continues exactly like one that never stopped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from pipeline.core.bars.aggregator import BarAggregator
from pipeline.core.bars.combine import BarCombiner
from pipeline.core.chain_quality import QualityLedger, chain_quality
from pipeline.core.checkpoint import (
    CheckpointError,
    decode_checkpoint,
    encode_checkpoint,
)
from pipeline.core.pricing import Chain, OptionPricer
from pipeline.core.rollups import OIRollup
from pipeline.core.vol_index_live import expiry_label, underlying_chains, vol_index_rows
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.kinds import OPTION_KINDS
from pipeline.records.rollups import CHAIN_BAR_DTYPE, STRIKE_BAR_DTYPE, VOL_INDEX_DTYPE
from pipeline.records.ticks import PRICED_TICK_DTYPE, implausible_future
from pipeline.records.time_units import SECONDS_PER_YEAR
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


@dataclass(frozen=True)
class TickCounts:
    """What the finest interval's aggregator dropped or corrected for one batch, per tick (a tick reaches the
    bars of every interval or of none, so each is counted once)."""

    duplicates: int = 0
    late_corrections: int = 0
    too_late: int = 0
    feed_gap_s: float = 0.0  # > 0: the batch came after this many seconds (receive time) without a tick
    future_rejected: int = 0  # ticks rejected: exchange time implausibly far ahead of the receive time
    vix_skipped: dict[str, int] = field(default_factory=dict)  # closed minutes without an index row, by reason


@dataclass(frozen=True)
class ProcessResult:
    underlying: str
    priced: np.ndarray  # PRICED_TICK_DTYPE, the batch in receive order
    bars: np.ndarray | None  # BAR_DTYPE, closed or corrected bars of every interval; None when none
    strike_rows: np.ndarray  # STRIKE_BAR_DTYPE
    chain_rows: np.ndarray  # CHAIN_BAR_DTYPE
    counts: TickCounts
    vol_index_rows: np.ndarray = field(default_factory=lambda: np.empty(0, VOL_INDEX_DTYPE))  # VOL_INDEX_DTYPE


@dataclass(frozen=True)
class SeedRequest:
    """Stored bars a rollup needs before its first update: per token, the newest bar of ``interval_s``
    with ``bucket < before`` (epoch seconds)."""

    interval_s: int
    tokens: np.ndarray
    before: int


class UnderlyingState:
    """The bar aggregator of the finest interval, the combiners of the coarser ones and the OI rollups of
    one underlying.

    Only the finest interval (1 minute) aggregates ticks; 5- and 15-minute bars are combined from its
    bars (``pipeline.core.bars.combine``), so a coarse bar always equals its fine bars and the state
    holds no more than the finest interval's open ticks and late window."""

    def __init__(self, underlying: str, config: BarConfig) -> None:
        self.underlying = underlying
        self.started = False
        self.newest_recv_ts: int | None = None  # epoch us: feed gaps are judged on receive time
        self._closed: list[np.ndarray] = []
        finest = min(config.intervals_s)
        self.aggregator = BarAggregator(finest, self._closed.append, grace_s=config.grace_s,
                                        late_window_s=config.late_window_s, late_rule_interval_s=finest)
        self.combiners = [BarCombiner(interval, finest) for interval in sorted(config.intervals_s) if interval != finest]
        # retain what a late correction can still reach: the late window plus the bar's and the next one's interval
        self.rollups = {
            interval: OIRollup(underlying, interval,
                               retain_s=config.late_window_s + config.grace_s + 2 * interval)
            for interval in config.intervals_s
        }
        self.quality = self._quality_ledger()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_closed"] = []
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "quality" not in state:  # a checkpoint from before the chain-quality counts
            self.quality = self._quality_ledger()
        self.aggregator.on_bars = self._closed.append

    def _quality_ledger(self) -> QualityLedger:
        """Chain-quality counts kept as long as the coarsest rollup can still recompute a row."""
        return QualityLedger(retain_s=max(r.retain_s for r in self.rollups.values()))

    def start(self, first_tick_ts: int, index: InstrumentIndex) -> list[SeedRequest]:
        """Tell the rollups the first tick time; the stored bars each one should be seeded with."""
        self.started = True
        own = (index.underlying == self.underlying) & np.isin(index.kind, OPTION_KINDS)
        return [SeedRequest(interval, index.tokens[own], rollup.start(first_tick_ts))
                for interval, rollup in self.rollups.items()]

    def add(self, ticks: np.ndarray) -> tuple[np.ndarray | None, TickCounts]:
        """Aggregate the batch; (bars of every interval closed or corrected by it, counters)."""
        before = dict(self.aggregator.stats)
        self.aggregator.add_ticks(ticks)
        after = self.aggregator.stats
        counts = TickCounts(
            duplicates=after["duplicates"] - before["duplicates"],
            late_corrections=after["late_corrections"] - before["late_corrections"],
            too_late=after["too_late_dropped"] - before["too_late_dropped"],
        )
        return self._take_closed(), counts

    def advance(self, exchange_ts: int) -> np.ndarray | None:
        """The exchange clock reached ``exchange_ts``: the bars that closes, every interval (None: none)."""
        self.aggregator.advance(exchange_ts)
        return self._take_closed()

    def _take_closed(self) -> np.ndarray | None:
        """The fine bars emitted since the last call and the coarse bars they close or correct."""
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

    def rollup(self, bars: np.ndarray, index: InstrumentIndex) -> tuple[np.ndarray, np.ndarray]:
        """(strike rows, chain rows) of the closed bars, all intervals."""
        parts = [r.update(bars, index) for r in self.rollups.values()]
        return (np.concatenate([p[0] for p in parts]) if parts else np.empty(0, STRIKE_BAR_DTYPE),
                np.concatenate([p[1] for p in parts]) if parts else np.empty(0, CHAIN_BAR_DTYPE))


class TickProcessor:
    """Every underlying's state in one worker; :meth:`process` is the whole live-path computation."""

    def __init__(self, config: BarConfig, vix_roll_days: float = 3.0, vix_min_strikes: int = 3) -> None:
        self.config = config
        self.vix_roll_days = vix_roll_days  # the near expiry of the volatility index rolls this close to expiry
        self.vix_min_strikes = vix_min_strikes  # out-of-the-money strikes with bids each side of k0 an index needs
        self.states: dict[str, UnderlyingState] = {}

    def state(self, underlying: str) -> UnderlyingState:
        state = self.states.get(underlying)
        if state is None:
            state = self.states[underlying] = UnderlyingState(underlying, self.config)
        return state

    def start(self, underlying: str, ticks: np.ndarray, index: InstrumentIndex) -> list[SeedRequest]:
        """Before an underlying's first batch with a known exchange time: the seeds its rollups need
        (empty when it has started already or the batch has no exchange time)."""
        state = self.state(underlying)
        plausible = ~implausible_future(ticks, self.config.max_clock_skew_s)
        known = ticks["exchange_ts"][(ticks["exchange_ts"] > 0) & plausible]
        if state.started or not len(known):
            return []
        return state.start(int(known.min()), index)

    def seed(self, underlying: str, interval_s: int, bars: np.ndarray, index: InstrumentIndex) -> None:
        self.state(underlying).rollups[interval_s].seed(bars, index)

    def process(self, underlying: str, ticks: np.ndarray, pricer: OptionPricer) -> ProcessResult:
        """Price ``ticks`` (TICK_DTYPE, one underlying, receive order), aggregate, roll up. Ticks with an
        implausible exchange time (``BarConfig.max_clock_skew_s``) are left out first: they touch no state."""
        state = self.state(underlying)
        future = implausible_future(ticks, self.config.max_clock_skew_s)
        if future.any():
            ticks = ticks[~future]
        priced = pricer.price(ticks)
        bars, counts = state.add(priced)
        gap_s = self._feed_gap_s(state, ticks) if len(ticks) else 0.0
        counts = replace(counts, feed_gap_s=gap_s, future_rejected=int(future.sum()))
        return self._result(state, priced, bars, counts, pricer.index, pricer)

    def _result(self, state: UnderlyingState, priced: np.ndarray, bars: np.ndarray | None, counts: TickCounts,
                index: InstrumentIndex, pricer: OptionPricer | None) -> ProcessResult:
        """Roll up ``bars``; with a ``pricer``, at every 1-minute close they hold (the book as it stands at that
        close: corrections change no quote) count each expiry's quote quality and compute the volatility index."""
        if bars is None:
            return ProcessResult(state.underlying, priced, bars, np.empty(0, STRIKE_BAR_DTYPE),
                                 np.empty(0, CHAIN_BAR_DTYPE), counts)
        finest = min(self.config.intervals_s)
        minutes = sorted(set(bars["bucket"][(bars["interval_s"] == finest) & (bars["correction"] == 0)].tolist()))
        vix = np.empty(0, VOL_INDEX_DTYPE)
        if pricer is not None and minutes:
            expiries = underlying_chains(pricer.index, pricer.chains, state.underlying)
            self._record_quality(state, minutes, expiries, pricer)
            skipped: dict[str, int] = {}
            vix = vol_index_rows(state.underlying, minutes, pricer.book, expiries, pricer.r, pricer.rules.fresh_s,
                                 self.vix_roll_days, self.config.intervals_s, int(bars["last_recv_ts"].max()),
                                 self.vix_min_strikes, skipped)
            counts = replace(counts, vix_skipped=skipped)
        strike_rows, chain_rows = state.rollup(bars, index)
        state.quality.fill(chain_rows, finest)
        return ProcessResult(state.underlying, priced, bars, strike_rows, chain_rows, counts, vix)

    def _record_quality(self, state: UnderlyingState, minutes: list[int], expiries: list[tuple[int, Chain]],
                        pricer: OptionPricer) -> None:
        """Count each expiry's quote quality at the close of each of ``minutes`` (``pipeline.core.chain_quality``)."""
        finest = min(self.config.intervals_s)
        for expiry_ts, chain in expiries:
            for minute in minutes:
                now = minute + finest
                quality = chain_quality(pricer.book, chain.strikes, chain.call_rows, chain.put_rows, now,
                                        pricer.rules.fresh_s, pricer.forward_at(chain, expiry_ts, now),
                                        max(expiry_ts - now, 0) / SECONDS_PER_YEAR, pricer.r)
                state.quality.record(expiry_label(expiry_ts), minute, quality)

    def _feed_gap_s(self, state: UnderlyingState, ticks: np.ndarray) -> float:
        """Seconds of receive time since the underlying's previous tick when that exceeds ``feed_gap_s``
        (an ingestor restarted, a connection down), else 0. Replays and redeliveries never count: their
        receive times are not newer."""
        if not len(ticks):
            return 0.0
        first, last = int(ticks["recv_ts"].min()), int(ticks["recv_ts"].max())
        previous, state.newest_recv_ts = state.newest_recv_ts, max(last, state.newest_recv_ts or last)
        gap_s = (first - previous) / 1e6 if previous is not None else 0.0
        return gap_s if gap_s > self.config.feed_gap_s else 0.0

    def advance(self, underlying: str, exchange_ts: int, index: InstrumentIndex,
                pricer: OptionPricer | None = None) -> ProcessResult:
        """A clock record: the underlying's exchange clock reached ``exchange_ts`` (epoch s) with no tick;
        the bars (and rollups, and with a ``pricer`` the volatility index) that closes."""
        state = self.state(underlying)
        bars = state.advance(exchange_ts)
        return self._result(state, np.empty(0, PRICED_TICK_DTYPE), bars, TickCounts(), index, pricer)

    def snapshot(self, underlyings: Iterable[str], pricer: OptionPricer) -> bytes:
        """A checkpoint of these underlyings' states and price book entries (``pipeline.core.checkpoint``)."""
        names = [u for u in underlyings if u in self.states]
        return encode_checkpoint(self.config, {u: self.states[u] for u in names},
                                 {u: pricer.book_entries(u) for u in names})

    def restore(self, blob: bytes, pricer: OptionPricer, now_s: float = float("inf")) -> list[str]:
        """Replace the states of a checkpoint's underlyings by it; the underlyings restored.

        Raises ``CheckpointError`` (nothing changed) when it was taken with other bar settings or another
        format, or when its event time is more than ``max_clock_skew_s`` ahead of ``now_s`` (the caller's
        clock, epoch s): a watermark poisoned by a far-future tick is never brought back."""
        states, books = decode_checkpoint(blob, self.config)
        for name, state in states.items():
            event_time = state.aggregator.event_time()
            if event_time is not None and event_time > now_s + self.config.max_clock_skew_s:
                raise CheckpointError(f"{name}'s event time {event_time} is more than "
                                      f"{self.config.max_clock_skew_s:.0f}s ahead of the clock ({now_s:.0f})")
        self.states.update(states)
        for entries in books.values():
            pricer.restore_book(entries)
        return sorted(states)

    def drop(self, underlyings: Iterable[str]) -> None:
        """Forget these underlyings' states (their partition moved to another worker)."""
        for underlying in underlyings:
            self.states.pop(underlying, None)
