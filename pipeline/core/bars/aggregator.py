"""The bar aggregator of one interval: OHLC/volume/OI/VWAP bars per instrument, bucketed by exchange time.

Pure core: no I/O and no wall clock. Time enters only through the ticks'
``exchange_ts`` (the event time), so a replay gives the same bars as the live
run. Definitions are those of docs/design.md:

- bucket: ``exchange_ts // interval_s * interval_s`` (epoch seconds, the start
  of the interval; epoch-aligned, so 09:15 IST starts a 1/5/15-minute bucket).
- order inside a bucket: ``(exchange_ts, recv_ts)``.
- open/high/low/close: of ``last_price`` over the bucket's ticks.
- volume: cumulative day volume at the bucket's last tick minus that at the
  previous bucket's last tick (first bucket of an instrument: minus its first
  tick's cumulative volume).
- oi: at the bucket's last tick; oi_open/oi_high/oi_low over the bucket.
- vwap: sum(last_price * volume increment) / sum(increments); NaN when the
  bar's volume is 0.
- tick_count: ticks seen in the bucket (duplicates excluded).

Parts (``pipeline.core.bars``): ``builder`` computes bars from grouped
ticks, ``watermark`` decides when a bucket closes and which ticks are too
late, ``slots`` holds the per-instrument state, ``late_store`` keeps closed
buckets for corrections; this module puts them together.

``BAR_DTYPE`` (``pipeline.records.bars``) is the record handed to sinks and put on the ``bars`` topic.
``last_recv_ts`` (epoch microseconds of the newest tick in the bar) versions a
bar: a late tick re-emits the bar with a newer ``last_recv_ts`` and the sink
keeps the newest version.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.core.bars.builder import (
    N_CLOSE_FIELDS,
    aggregate_groups,
    as_priced,
    group_ends,
    running_volume,
    trading_day,
)
from pipeline.core.bars.late_store import ClosedBucket, LateTickStore, retained_copy
from pipeline.core.bars.slots import NO_TS, SlotTable
from pipeline.core.bars.watermark import Watermark
from pipeline.core.state import field, nest, optional_int, sub
from pipeline.records.ticks import CLOSE_FIELDS, PRICED_TICK_DTYPE


class BarAggregator:
    """Event-time OHLC/volume/OI/VWAP bars of one interval, for any mix of instruments.

    Feed it tick batches (``PRICED_TICK_DTYPE``, or ``TICK_DTYPE`` whose bars
    then carry NaN Greeks) in receive order; it calls ``on_bars`` with a
    ``BAR_DTYPE`` array (sorted by ``(bucket, instrument_token)``, one row per
    bar) once per ``add_ticks``/``flush`` call that closed or corrected bars.

    Semantics (pure: no wall clock, time comes only from the ticks):

    - Bucket: ``exchange_ts // interval_s * interval_s``; a tick at exactly a
      bucket start belongs to that bucket. Order inside a bucket:
      ``(exchange_ts, recv_ts)``.
    - Watermark: the largest ``exchange_ts`` received so far (every tick of
      this aggregator, any instrument, duplicates included). Bucket ``b`` closes
      when ``b + interval_s + grace_s <= watermark``; its bars are emitted then,
      once. ``flush()`` closes every open bucket now.
    - Duplicates: a tick whose ``recv_ts`` is ``<=`` the newest ``recv_ts``
      accepted so far for its instrument is an at-least-once redelivery: dropped,
      counted in ``duplicates``. Checked first, so a redelivered too-late tick
      counts as a duplicate.
    - Late ticks: the effective late window is ``L = max(late_window_s,
      grace_s)``. Tick ``i`` (in receive order) with ``rule_bucket +
      rule_interval_s + L <= watermark_i`` (the watermark including ticks
      ``0..i``, so the decision does not depend on how ticks are split into
      batches) is dropped and counted in ``too_late_dropped``;
      ``rule_interval_s`` is ``late_rule_interval_s`` (the finest interval of a
      set of aggregators fed the same ticks: one rule for all, so a tick reaches
      every interval's bars or none) and defaults to ``interval_s``. An accepted tick for an already closed
      bucket is a late correction (counted per tick in ``late_corrections``):
      the bar of its (instrument, bucket) is recomputed from the bucket's
      retained ticks plus the late tick and emitted again. A closed bucket's
      ticks are retained until ``bucket + interval_s + L <= watermark`` and
      then freed, so memory holds only the open buckets plus that window.
    - volume: sum over the bucket's ticks of their increments: the rise of the
      instrument's running maximum of cumulative volume within its IST trading
      day, in event order (``builder.running_volume``). A day's first tick has
      increment 0 (docs/design.md: the first bucket counts from its first tick); a
      cumulative volume below the running maximum counts nothing and, when it
      recovers, only what exceeds the maximum counts (a dip never counts twice);
      volume is never negative. So a bar's volume is the day's running maximum at
      its last tick minus that at the previous bar's last tick.
    - vwap: ``sum(last_price * increment) / sum(increment)`` over the bucket's
      ticks with a positive increment; NaN when the bar's volume is 0.
    - oi at the last tick, oi_open/oi_high/oi_low over the bucket; Greeks of the
      bucket's last tick.
    - last_recv_ts: the newest ``recv_ts`` among the bucket's ticks and the
      instrument's previous tick (the volume baseline). A late tick that
      changes the end of its bar (its last tick, or the running volume maximum
      there) changes the next bar's baseline, so the instrument's later closed
      bars are re-emitted while their ends keep moving; they carry the late
      tick's ``recv_ts`` when it became their previous tick, else (only the
      running maximum moved) their own version again, and the sink's upsert
      (most ticks, then newest version, then last emitted) keeps the corrected
      rows. The newest version of every closed bar always equals the bar
      computed from all accepted ticks, whatever the batch split. Re-emitted
      rows have ``correction`` 1.

    ``stats``: ``ticks`` (received, all), ``duplicates``, ``late_corrections``,
    ``too_late_dropped``, ``bars_emitted`` (rows handed to ``on_bars``).
    """

    def __init__(
        self,
        interval_s: int,
        on_bars: Callable[[np.ndarray], None],
        *,
        grace_s: float = 2.0,
        late_window_s: float = 300.0,
        late_rule_interval_s: int | None = None,
    ) -> None:
        if int(interval_s) != interval_s or interval_s <= 0:
            raise ValueError(f"interval_s must be a positive whole number of seconds, got {interval_s!r}")
        if grace_s < 0 or late_window_s < 0:
            raise ValueError("grace_s and late_window_s must be >= 0")
        self.interval_s = int(interval_s)
        self.on_bars = on_bars
        self.grace_s = float(grace_s)
        self.late_window_s = float(late_window_s)
        self.stats: dict[str, int] = {
            "ticks": 0,
            "duplicates": 0,
            "late_corrections": 0,
            "too_late_dropped": 0,
            "bars_emitted": 0,
        }
        self._watermark = Watermark(self.interval_s, self.grace_s, self.late_window_s, late_rule_interval_s)
        self._closed_before: int | None = None  # every bucket < this is closed
        self._slots = SlotTable()
        self._late = LateTickStore(self._slots, self.interval_s)
        # open buckets: accepted ticks not yet closed
        self._pending: list[np.ndarray] = []
        self._pending_slots: list[np.ndarray] = []
        self._pending_n = 0

    def to_state(self) -> dict:
        """Explicit state (``pipeline.core.state``): counters, watermark, closed edge, the per-instrument
        slots, the retained closed buckets and the open ticks; the configuration is not part of it. Arrays may be
        views of the live state: encode them before the aggregator changes."""
        if len(self._pending) > 1:  # one array from here on: the next close would join them anyway
            self._pending = [np.concatenate(self._pending)]
            self._pending_slots = [np.concatenate(self._pending_slots)]
        pending = self._pending[0] if self._pending else np.empty(0, PRICED_TICK_DTYPE)
        pending_slots = self._pending_slots[0] if self._pending_slots else np.empty(0, np.int64)
        state = {f"stats/{name}": value for name, value in self.stats.items()}
        state.update(watermark=self._watermark.value, closed_before=self._closed_before,
                     pending=pending, pending_slots=pending_slots.astype(np.int64, copy=False))
        state.update(nest("slots", self._slots.to_state()))
        state.update(nest("late", self._late.to_state()))
        return state

    def restore(self, state: dict) -> None:
        """Continue from :meth:`to_state`'s state (taken with the same interval, grace and late window)."""
        self.stats = {name: int(field(state, f"stats/{name}")) for name in self.stats}
        self._watermark.value = optional_int(field(state, "watermark"))
        self._closed_before = optional_int(field(state, "closed_before"))
        self._slots = SlotTable.from_state(sub(state, "slots"))
        self._late = LateTickStore(self._slots, self.interval_s)
        self._late.restore(sub(state, "late"))
        pending = np.array(field(state, "pending"))  # a copy: the state's arrays may be read-only views
        self._pending = [pending] if len(pending) else []
        self._pending_slots = [np.array(field(state, "pending_slots"), np.int64)] if len(pending) else []
        self._pending_n = len(pending)

    # ----------------------------------------------------------------- public

    def add_ticks(self, ticks: np.ndarray) -> None:
        n = len(ticks)
        if n == 0:
            return
        self.stats["ticks"] += n
        ticks = as_priced(ticks)
        slots = self._slots.slots_for(ticks["instrument_token"])
        bucket = ticks["exchange_ts"] // self.interval_s * self.interval_s
        too_late = self._watermark.too_late(ticks["exchange_ts"], self._watermark.running(ticks["exchange_ts"]))
        dup = self._slots.duplicates(slots, ticks["recv_ts"], too_late)
        accepted = ~(dup | too_late)
        self.stats["duplicates"] += int(np.count_nonzero(dup))
        self.stats["too_late_dropped"] += int(np.count_nonzero(too_late & ~dup))

        out: list[np.ndarray] = []
        if not accepted.all():
            acc_idx = np.flatnonzero(accepted)
            ticks, slots, bucket = ticks[acc_idx], slots[acc_idx], bucket[acc_idx]
        if len(ticks):
            self._accept(ticks, slots, bucket, out)
        self._close(self._watermark.closed_before(), out)

    def advance(self, exchange_ts: int) -> None:
        """The exchange clock reached ``exchange_ts`` with no tick (a quiet feed, a clock record):
        the watermark moves there and closes what that closes. Never moves it back."""
        if self._watermark.value is not None and exchange_ts <= self._watermark.value:
            return
        self._watermark.value = int(exchange_ts)
        self._close(self._watermark.closed_before(), [])

    def flush(self) -> None:
        """Close and emit every open bar (shutdown, end of a replay)."""
        if self._pending_n == 0:
            return
        top = max(int(p["exchange_ts"].max()) for p in self._pending) // self.interval_s * self.interval_s
        self._close(top + self.interval_s, [])

    def state_size(self) -> dict[str, int]:
        """What the aggregator holds: open ticks, retained closed buckets and their ticks."""
        return {
            "open_ticks": self._pending_n,
            "retained_buckets": len(self._late.buckets),
            "retained_ticks": self._late.n_ticks(),
            "instruments": len(self._slots),
        }

    def event_time(self) -> int | None:
        """The watermark: the newest exchange time seen (epoch s), None before the first tick."""
        return self._watermark.value

    def closed_before(self) -> int | None:
        """Every bucket below this is closed (None before the first close)."""
        return self._closed_before

    def free_limit(self) -> float:
        """Closed buckets ``b <= free_limit()`` are out of the late window: no correction reaches them."""
        return self._watermark.free_limit()

    def retained_buckets(self) -> list[int]:
        """Starts of the closed buckets still kept for late corrections, ascending."""
        return sorted(self._late.buckets)

    # ------------------------------------------------------------- internals

    def _accept(self, ticks: np.ndarray, slots: np.ndarray, bucket: np.ndarray, out: list[np.ndarray]) -> None:
        """Accepted ticks: late ones correct closed bars (into ``out``), the rest join the open buckets."""
        np.maximum.at(self._slots.last_recv, slots, ticks["recv_ts"])
        if self._closed_before is not None:
            late = bucket < self._closed_before
            if late.any():
                self.stats["late_corrections"] += int(np.count_nonzero(late))
                out.append(self._late.correct(ticks[late], slots[late], bucket[late]))
                keep = ~late
                ticks, slots = ticks[keep], slots[keep]
        if len(ticks):
            self._pending.append(ticks)
            self._pending_slots.append(slots)
            self._pending_n += len(ticks)

    def _close(self, closed_before: int, out: list[np.ndarray]) -> None:
        """Close every bucket < ``closed_before``, free what left the late window, emit ``out`` + closed bars."""
        if self._closed_before is None or closed_before > self._closed_before:
            self._closed_before = closed_before
            if self._pending_n:
                closing = self._take_closing(closed_before)
                if closing is not None:
                    out.append(self._close_ticks(*closing))
        if self._late.buckets and self._watermark.value is not None:
            self._late.free(self._watermark.free_limit())
        out = [o for o in out if len(o)]
        if not out:
            return
        bars = out[0] if len(out) == 1 else np.concatenate(out)
        if len(bars) > 1:
            bars = bars[np.lexsort((bars["instrument_token"], bars["bucket"]))]
        self.stats["bars_emitted"] += len(bars)
        self.on_bars(bars)

    def _take_closing(self, closed_before: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Remove the open ticks of buckets < ``closed_before``: (ticks, slots, buckets), or None."""
        interval = self.interval_s
        pend = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        pslots = self._pending_slots[0] if len(self._pending_slots) == 1 else np.concatenate(self._pending_slots)
        pbucket = pend["exchange_ts"] // interval * interval
        closing = pbucket < closed_before
        if not closing.any():
            self._pending, self._pending_slots = [pend], [pslots]
            return None
        if closing.all():
            self._pending, self._pending_slots, self._pending_n = [], [], 0
            return pend, pslots, pbucket
        keep = ~closing
        self._pending, self._pending_slots = [pend[keep]], [pslots[keep]]
        self._pending_n = len(self._pending[0])
        return pend[closing], pslots[closing], pbucket[closing]

    def _close_ticks(self, t: np.ndarray, slot: np.ndarray, bucket: np.ndarray) -> np.ndarray:
        """Bars of closing ticks (any buckets); advances the tails and retains the buckets for corrections."""
        # slot-major event order: increments and baselines
        order = np.lexsort((t["recv_ts"], t["exchange_ts"], slot))
        slot, bucket, t = slot[order], bucket[order], t[order]
        inc, prev_recv, maximum = self._increments_and_tails(t, slot)
        if bucket.min() != bucket.max():  # several buckets close at once: bucket-major
            o2 = np.argsort(bucket, kind="stable")
            slot, bucket, t, inc, prev_recv, maximum = (slot[o2], bucket[o2], t[o2], inc[o2], prev_recv[o2],
                                                        maximum[o2])
        n = len(t)
        gstart = np.empty(n, bool)
        gstart[0] = True
        gstart[1:] = (slot[1:] != slot[:-1]) | (bucket[1:] != bucket[:-1])
        starts = np.flatnonzero(gstart)
        ends = group_ends(starts, n)
        greeks = np.empty((len(starts), N_CLOSE_FIELDS))
        for j, name in enumerate(CLOSE_FIELDS):
            greeks[:, j] = t[name][ends]
        bars = aggregate_groups(t["last_price"], t["oi"], t["recv_ts"], inc, starts, prev_recv[starts], greeks)
        bars["instrument_token"] = self._slots.token[slot[starts]]
        bars["bucket"] = bucket[starts]
        bars["interval_s"] = self.interval_s
        self._retain(t, slot[starts], bucket[starts], starts, ends, greeks, maximum)
        return bars

    def _increments_and_tails(self, t: np.ndarray, slot: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per tick (slot-major event order) its volume increment, its baseline's recv_ts and the running
        maximum of its day's cumulative volume (``builder.running_volume``); the slots' tails advance to
        their last closing tick."""
        cum, ex, recv = t["volume"], t["exchange_ts"], t["recv_ts"]
        n = len(t)
        first_of_slot = np.empty(n, bool)
        first_of_slot[0] = True
        np.not_equal(slot[1:], slot[:-1], out=first_of_slot[1:])
        fs = np.flatnonzero(first_of_slot)
        fslot = slot[fs]
        tails = self._slots
        day = trading_day(ex)
        segment_start = first_of_slot.copy()
        segment_start[1:] |= day[1:] != day[:-1]  # a new trading day starts from its first tick
        seg_first_of_slot = first_of_slot[np.flatnonzero(segment_start)]
        # a segment continues the tail's running maximum when it is the slot's first and on the tail's day
        has_init = np.zeros(int(segment_start.sum()), bool)
        init = np.zeros(len(has_init), np.int64)
        continues = tails.tail_valid[fslot] & (trading_day(tails.tail_ex[fslot]) == day[fs])
        has_init[seg_first_of_slot] = continues
        init[seg_first_of_slot] = tails.tail_cum[fslot]
        maximum, inc = running_volume(cum, segment_start, init, has_init)
        prev_recv = np.empty(n, np.int64)
        prev_recv[1:] = recv[:-1]
        prev_recv[fs] = np.where(tails.tail_valid[fslot], tails.tail_recv[fslot], NO_TS)
        ls = group_ends(fs, n)  # each slot's last tick: its new tail
        tails.set_tail(slot[ls], ex[ls], recv[ls], maximum[ls])
        return inc, prev_recv, maximum

    def _retain(self, t: np.ndarray, gslot: np.ndarray, gbucket: np.ndarray, starts: np.ndarray,
                ends: np.ndarray, greeks: np.ndarray, maximum: np.ndarray) -> None:
        """Keep each closed bucket's groups (with each group's running volume maximum at its end) for late
        corrections, or fold them straight into the freed baseline when the bucket is already out of the
        late window."""
        free_limit = self._watermark.free_limit()
        bcut = np.flatnonzero(gbucket[1:] != gbucket[:-1]) + 1
        gb = np.concatenate([[0], bcut, [len(starts)]])
        for g0, g1 in zip(gb[:-1].tolist(), gb[1:].tolist()):
            b = int(gbucket[g0])
            s_ = gslot[g0:g1]
            if b <= free_limit:
                e_ = ends[g0:g1]
                self._slots.set_base(s_, t["exchange_ts"][e_], t["recv_ts"][e_], maximum[e_])
                continue
            lo, hi = int(starts[g0]), int(ends[g1 - 1]) + 1
            rel = np.append(starts[g0:g1] - lo, hi - lo)
            self._late.retain(b, ClosedBucket(s_.copy(), rel, retained_copy(t, lo, hi), greeks[g0:g1].copy(),
                                              maximum[ends[g0:g1]].copy()))


__all__ = ["BarAggregator"]
