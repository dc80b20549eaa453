"""The engine of one underlying: everything the live path computes for it, and the only owner of its state.

An :class:`UnderlyingEngine` owns, for one underlying: its slice of the price book (its index, futures and
options), the bars of every interval (``pipeline.core.bars.intervals``), the OI rollups of every interval,
the chain-quality counts at each minute's close (keyed by expiry timestamp) and the volatility index. Its
API takes ticks (:meth:`process`), an exchange clock (:meth:`advance`), seed requests and seeds (a restart,
``pipeline.core.rollups``), and returns one :class:`~pipeline.core.outputs.EngineOutputs`. Pure: no I/O, no
clock; time comes only with the ticks.

A batch:
1. ticks whose exchange time is implausibly far ahead of their receive time are left out first
   (``BarConfig.max_clock_skew_s``): they touch no state;
2. the batch is priced on a copy of the book (``pipeline.core.pricing``);
3. the priced ticks go to the bars; bars that closed or were corrected go to the rollups; at every
   1-minute close among them the chain quality is counted and the volatility index computed, from the
   book as it stands at that close;
4. only then does the copy become the book.
A failure in 1-2 leaves the engine exactly as it was. A failure in 3 (a defect, never the data: the batch
was decoded and validated) may leave the bars half-updated: the engine marks itself ``broken`` and its
owner (``pipeline.core.engines``) discards it, so the underlying starts fresh, as after a refused
checkpoint, never from half a batch.

State (:meth:`to_state`, :meth:`from_state`): plain arrays and scalars (``pipeline.core.state``), with the
bar settings it was taken under; the format number is the checkpoint's (``pipeline.core.checkpoint``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from pipeline.core.bars.intervals import IntervalBars
from pipeline.core.chain_quality import QualityLedger, chain_quality
from pipeline.core.outputs import EngineConfig, EngineOutputs, SeedRequest, TickCounts
from pipeline.core.price_book import PriceBook
from pipeline.core.pricing import PricingContext, forward_at, price_ticks
from pipeline.core.rollups import OIRollup
from pipeline.core.state import State, StateError, field, nest, optional_int, sub
from pipeline.core.vol_index_live import underlying_chains, vol_index_rows
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.kinds import OPTION_KINDS
from pipeline.records.rollups import CHAIN_BAR_DTYPE, STRIKE_BAR_DTYPE, VOL_INDEX_DTYPE
from pipeline.records.ticks import PRICED_TICK_DTYPE, implausible_future
from pipeline.records.time_units import SECONDS_PER_YEAR


class UnderlyingEngine:
    """One underlying's live-path computation and state (see the module docstring)."""

    def __init__(self, underlying: str, config: EngineConfig, index: InstrumentIndex) -> None:
        self.underlying = underlying
        self.config = config
        bars = config.bars
        self.bars = IntervalBars(bars.intervals_s, bars.grace_s, bars.late_window_s)
        # retain what a late correction can still reach: the late window plus the bar's and the next one's interval
        self.rollups = {interval: OIRollup(underlying, interval,
                                           retain_s=bars.late_window_s + bars.grace_s + 2 * interval)
                        for interval in bars.intervals_s}
        self.quality = QualityLedger(max(r.retain_s for r in self.rollups.values()), minute_s=bars.finest_s)
        self.started = False  # the rollups were told the first tick time (and asked for their seeds)
        self.newest_recv_ts: int | None = None  # epoch us: feed gaps are judged on receive time
        self.broken = False  # a failure left part of a batch in the state (module docstring)
        self._ctx, self._expiries = self._context(index)
        self.book = PriceBook(len(self.index))

    def _context(self, index: InstrumentIndex) -> tuple[PricingContext, list]:
        own = index.of_underlying(self.underlying)
        ctx = PricingContext.of(own, self.config.r, self.config.rules)
        return ctx, underlying_chains(own, ctx.chains, self.underlying)

    @property
    def index(self) -> InstrumentIndex:
        """This underlying's instruments (its slice of the worker's index)."""
        return self._ctx.index

    def rebase(self, index: InstrumentIndex) -> None:
        """A refreshed instrument index: keep the book entries of the instruments still listed."""
        old = self.index
        self._ctx, self._expiries = self._context(index)
        self.book = self.book.rebased(old.positions(self.index.tokens))

    # -- restart -------------------------------------------------------------------------------

    def seed_requests(self, ticks: np.ndarray) -> list[SeedRequest]:
        """Before the first batch with a known exchange time: the stored bars each rollup should be seeded
        with (empty once started, or when the batch has no plausible exchange time)."""
        plausible = ~implausible_future(ticks, self.config.bars.max_clock_skew_s)
        known = ticks["exchange_ts"][(ticks["exchange_ts"] > 0) & plausible]
        if self.started or not len(known):
            return []
        self.started = True
        first = int(known.min())
        options = self.index.tokens[np.isin(self.index.kind, OPTION_KINDS)]
        return [SeedRequest(interval, options, rollup.start(first)) for interval, rollup in self.rollups.items()]

    def seed(self, interval_s: int, bars: np.ndarray) -> None:
        self.rollups[interval_s].seed(bars, self.index)

    # -- the live path ---------------------------------------------------------------------------

    def process(self, ticks: np.ndarray) -> EngineOutputs:
        """Price ``ticks`` (TICK_DTYPE, this underlying, receive order), aggregate, roll up (module docstring)."""
        future = implausible_future(ticks, self.config.bars.max_clock_skew_s)
        rejected = ticks[:0]
        if future.any():
            rejected, ticks = ticks[future], ticks[~future]
        book = self.book.copy()
        priced = price_ticks(self._ctx, book, ticks)
        try:
            bars, dropped = self.bars.add(priced)
            counts = TickCounts(duplicates=dropped["duplicates"], late_corrections=dropped["late_corrections"],
                                too_late=dropped["too_late_dropped"], feed_gap_s=self._feed_gap_s(ticks))
            outputs = replace(self._outputs(priced, bars, counts, book), rejected=rejected)
        except Exception:
            self.broken = True  # part of the batch may be in the bars or rollups: the owner discards this engine
            raise
        self.book = book
        if len(ticks):
            newest = int(ticks["recv_ts"].max())
            self.newest_recv_ts = max(newest, self.newest_recv_ts or newest)
        return outputs

    def advance(self, exchange_ts: int) -> EngineOutputs:
        """A clock record: the exchange clock reached ``exchange_ts`` (epoch s) with no tick; what that closes."""
        try:
            bars = self.bars.advance(exchange_ts)
            return self._outputs(np.empty(0, PRICED_TICK_DTYPE), bars, TickCounts(), self.book)
        except Exception:
            self.broken = True
            raise

    def event_time(self) -> int | None:
        return self.bars.event_time()

    def _outputs(self, priced: np.ndarray, bars: np.ndarray | None, counts: TickCounts,
                 book: PriceBook) -> EngineOutputs:
        """Roll up ``bars``; at every 1-minute close they hold (the book as it stands at that close: corrections
        change no quote) count each expiry's quote quality and compute the volatility index."""
        if bars is None:
            return EngineOutputs(self.underlying, priced, None, counts=counts)
        finest = self.config.bars.finest_s
        closes = (bars["interval_s"] == finest) & (bars["correction"] == 0)
        minutes = sorted(set(bars["bucket"][closes].tolist()))
        vix = np.empty(0, VOL_INDEX_DTYPE)
        if minutes:
            self._record_quality(minutes, book)
            skipped: dict[str, int] = {}
            config = self.config
            vix = vol_index_rows(self.underlying, minutes, book, self._expiries, config.r, config.rules.fresh_s,
                                 config.vix_roll_days, config.bars.intervals_s, int(bars["last_recv_ts"].max()),
                                 config.vix_min_strikes, skipped)
            counts = replace(counts, vix_skipped=skipped)
        parts = [r.update(bars, self.index, self.quality) for r in self.rollups.values()]
        strike_rows = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, STRIKE_BAR_DTYPE)
        chain_rows = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, CHAIN_BAR_DTYPE)
        return EngineOutputs(self.underlying, priced, bars, strike_rows, chain_rows, counts, vix)

    def _record_quality(self, minutes: list[int], book: PriceBook) -> None:
        """Count each expiry's quote quality at the close of each of ``minutes`` (``pipeline.core.chain_quality``)."""
        finest, fresh_s, r = self.config.bars.finest_s, self.config.rules.fresh_s, self.config.r
        for expiry_ts, chain in self._expiries:
            for minute in minutes:
                now = minute + finest
                quality = chain_quality(book, chain.strikes, chain.call_rows, chain.put_rows, now, fresh_s,
                                        forward_at(self._ctx, book, chain, expiry_ts, now),
                                        max(expiry_ts - now, 0) / SECONDS_PER_YEAR, r)
                self.quality.record(expiry_ts, minute, quality)

    def _feed_gap_s(self, ticks: np.ndarray) -> float:
        """Seconds of receive time since the underlying's previous tick when that exceeds ``feed_gap_s``
        (an ingestor restarted, a connection down), else 0. Replays and redeliveries never count: their
        receive times are not newer."""
        if not len(ticks) or self.newest_recv_ts is None:
            return 0.0
        gap_s = (int(ticks["recv_ts"].min()) - self.newest_recv_ts) / 1e6
        return gap_s if gap_s > self.config.bars.feed_gap_s else 0.0

    # -- state -----------------------------------------------------------------------------------

    def to_state(self) -> State:
        """Explicit state (``pipeline.core.state``): the bar settings it holds state for, the flags, the book
        (with each row's token), the bars, the rollups and the quality counts."""
        intervals, grace_s, late_window_s = self.config.bars.state_settings()
        state: State = {"intervals_s": np.array(intervals, np.int64), "grace_s": grace_s,
                        "late_window_s": late_window_s, "started": self.started, "newest_recv_ts": self.newest_recv_ts}
        state.update(nest("book", self.book.to_state(self.index.tokens)))
        state.update(nest("bars", self.bars.to_state()))
        for interval, rollup in self.rollups.items():
            state.update(nest(f"rollup{interval}", rollup.to_state()))
        state.update(nest("quality", self.quality.to_state()))
        return state

    @classmethod
    def from_state(cls, underlying: str, config: EngineConfig, index: InstrumentIndex,
                   state: State) -> UnderlyingEngine:
        """The engine :meth:`to_state` described, over ``index`` (instruments no longer listed are dropped from
        the book). :class:`StateError` when it was taken under other bar settings or misses a field."""
        saved = (tuple(int(i) for i in np.asarray(field(state, "intervals_s")).tolist()),
                 float(field(state, "grace_s")), float(field(state, "late_window_s")))
        if saved != config.bars.state_settings():
            raise StateError(f"{underlying}'s state was taken with bars {saved} (intervals, grace, late window), "
                             f"this worker has {config.bars.state_settings()}")
        engine = cls(underlying, config, index)
        engine.started = bool(field(state, "started"))
        engine.newest_recv_ts = optional_int(field(state, "newest_recv_ts"))
        try:
            engine.book = PriceBook.from_state(sub(state, "book"), engine.index.tokens)
            engine.bars.restore(sub(state, "bars"))
            for interval, rollup in engine.rollups.items():
                rollup.restore(sub(state, f"rollup{interval}"))
            engine.quality.restore(sub(state, "quality"))
        except (KeyError, ValueError, TypeError) as exc:
            raise StateError(f"{underlying}'s state does not fit ({type(exc).__name__}: {exc})") from None
        return engine


__all__ = ["UnderlyingEngine"]
