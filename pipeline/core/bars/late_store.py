"""Closed buckets kept for late corrections, and the corrected bars a late tick produces.

A closed bucket keeps, per instrument, its ticks in event order (40 bytes a
tick: ``RETAINED_DTYPE``) and the Greeks of its last tick, until the bucket
leaves the late window (``pipeline.core.bars.watermark``); then its last
ticks become the instruments' freed baseline (``SlotTable`` base) and it is
dropped. A late tick merges into its bucket's copy, and the bar is rebuilt from
the merged ticks; when the late tick became the bucket's last tick, the
instrument's next retained bar (whose volume baseline moved) is rebuilt too.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.bars.builder import N_GREEKS, aggregate_groups, volume_increments
from pipeline.core.bars.slots import NO_TS, SlotTable
from pipeline.records.ticks import GREEK_FIELDS

RETAINED_DTYPE = np.dtype(
    [("exchange_ts", "<i8"), ("recv_ts", "<i8"), ("last_price", "<f8"), ("volume", "<i8"), ("oi", "<i8")]
)


def retained_copy(ticks: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Rows ``lo:hi`` of priced ticks as ``RETAINED_DTYPE`` (``volume`` is the cumulative volume)."""
    kept = np.empty(hi - lo, RETAINED_DTYPE)
    for name in RETAINED_DTYPE.names:
        kept[name] = ticks[name][lo:hi]
    return kept


class ClosedBucket:
    """The retained ticks of one closed bucket, all instruments, grouped by slot.

    ``ticks[starts[i]:starts[i + 1]]`` are the ticks (event order) of slot
    ``slots[i]`` (sorted); ``greeks[i]`` the Greeks of its last tick. A late
    tick replaces the instrument's group by a merged copy in ``override``.
    """

    __slots__ = ("slots", "starts", "ticks", "greeks", "override")

    def __init__(self, slots: np.ndarray, starts: np.ndarray, ticks: np.ndarray, greeks: np.ndarray) -> None:
        self.slots = slots
        self.starts = starts
        self.ticks = ticks
        self.greeks = greeks
        self.override: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def empty(cls) -> ClosedBucket:
        return cls(np.empty(0, np.int64), np.zeros(1, np.int64), np.empty(0, RETAINED_DTYPE), np.empty((0, N_GREEKS)))

    def get(self, slot: int) -> tuple[np.ndarray, np.ndarray] | None:
        hit = self.override.get(slot)
        if hit is not None:
            return hit
        i = int(np.searchsorted(self.slots, slot))
        if i < len(self.slots) and self.slots[i] == slot:
            return self.ticks[self.starts[i] : self.starts[i + 1]], self.greeks[i]
        return None

    def n_ticks(self) -> int:
        replaced = sum(int(self.starts[i + 1] - self.starts[i]) for i in np.searchsorted(self.slots, list(self.override)))
        return len(self.ticks) - replaced + sum(len(t) for t, _ in self.override.values())


class LateTickStore:
    """The closed buckets still inside the late window of one aggregator, by bucket start."""

    def __init__(self, slots: SlotTable, interval_s: int) -> None:
        self.slots = slots
        self.interval_s = interval_s
        self.buckets: dict[int, ClosedBucket] = {}

    def retain(self, bucket: int, closed: ClosedBucket) -> None:
        self.buckets[bucket] = closed

    def n_ticks(self) -> int:
        return sum(b.n_ticks() for b in self.buckets.values())

    def free(self, limit: float) -> None:
        """Drop buckets ``<= limit``; their instruments' last ticks become the freed baseline."""
        for b in sorted(self.buckets):
            if b > limit:
                break
            closed = self.buckets.pop(b)
            if len(closed.slots):
                ends = closed.starts[1:] - 1
                self.slots.set_base(closed.slots, closed.ticks["recv_ts"][ends], closed.ticks["volume"][ends])
            for slot, (tk, _) in closed.override.items():
                self.slots.set_base(slot, tk["recv_ts"][-1], tk["volume"][-1])

    def correct(self, ticks: np.ndarray, slots: np.ndarray, bucket: np.ndarray) -> np.ndarray:
        """Merge accepted ticks of closed buckets into the retained state; the corrected bars (BAR_DTYPE)."""
        touched, baseline_moved, first_seen = self._merge(ticks, slots, bucket)
        keys = sorted(self.buckets)
        for slot, b in baseline_moved:
            for later in keys:
                if later > b and self.buckets[later].get(slot) is not None:
                    touched.add((slot, later))
                    break
        ordered = sorted(touched, key=lambda k: (k[1], int(self.slots.token[k[0]])))
        bars = self._rebuild(ordered, keys)
        # a bar the late ticks created (nothing of it was emitted before) is not a correction
        bars["correction"] = [0 if k in first_seen else 1 for k in ordered]
        return bars

    def _merge(self, ticks: np.ndarray, slots: np.ndarray, bucket: np.ndarray
               ) -> tuple[set[tuple[int, int]], list[tuple[int, int]], set[tuple[int, int]]]:
        """Merge each (instrument, bucket) group of late ticks; the (slot, bucket)s touched, those whose
        last tick changed (the next bar's volume baseline moved), and those that had no bar before."""
        touched: set[tuple[int, int]] = set()
        baseline_moved: list[tuple[int, int]] = []
        first_seen: set[tuple[int, int]] = set()
        order = np.lexsort((ticks["recv_ts"], ticks["exchange_ts"], bucket, slots))
        ticks, slots, bucket = ticks[order], slots[order], bucket[order]
        cut = np.flatnonzero((slots[1:] != slots[:-1]) | (bucket[1:] != bucket[:-1])) + 1
        bounds = np.concatenate([[0], cut, [len(ticks)]])
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            slot, b = int(slots[lo]), int(bucket[lo])
            closed = self.buckets.get(b)
            if closed is None:
                closed = self.buckets[b] = ClosedBucket.empty()
            new = retained_copy(ticks, lo, hi)
            cur = closed.get(slot)
            if cur is None:
                merged, greeks, old_last = new, None, None
                first_seen.add((slot, b))
            else:
                merged = np.concatenate([cur[0], new])
                merged = merged[np.lexsort((merged["recv_ts"], merged["exchange_ts"]))]
                greeks = cur[1]
                old_last = (int(cur[0]["exchange_ts"][-1]), int(cur[0]["recv_ts"][-1]))
            new_last = (int(merged["exchange_ts"][-1]), int(merged["recv_ts"][-1]))
            if new_last != old_last:
                # the last tick is one of the new ones (the newest by event order)
                last = ticks[hi - 1]
                greeks = np.array([last[g] for g in GREEK_FIELDS], np.float64)
                baseline_moved.append((slot, b))
                self._advance_tail(slot, new_last, int(merged["volume"][-1]))
            closed.override[slot] = (merged, greeks)
            touched.add((slot, b))
        return touched, baseline_moved, first_seen

    def _advance_tail(self, slot: int, last: tuple[int, int], cum: int) -> None:
        s = self.slots
        if not s.tail_valid[slot] or last > (int(s.tail_ex[slot]), int(s.tail_recv[slot])):
            s.set_tail(slot, last[0], last[1], cum)

    def _rebuild(self, keys: list[tuple[int, int]], retained_keys: list[int]) -> np.ndarray:
        """The bars of the given (slot, bucket)s, from their retained ticks and volume baselines."""
        parts, starts, prev_cum, has_prev, base_recv, greeks_rows = [], [], [], [], [], []
        pos = 0
        for slot, b in keys:
            tk, gk = self.buckets[b].get(slot)
            prev = self._prev_tick(slot, b, retained_keys)
            parts.append(tk)
            starts.append(pos)
            pos += len(tk)
            has_prev.append(prev is not None)
            prev_cum.append(prev[0] if prev else 0)
            base_recv.append(prev[1] if prev else NO_TS)
            greeks_rows.append(gk)
        allt = np.concatenate(parts)
        starts_a = np.asarray(starts, np.int64)
        cum = allt["volume"]
        pc = np.empty(len(allt), np.int64)
        pc[1:] = cum[:-1]
        pc[starts_a] = prev_cum
        hp = np.ones(len(allt), bool)
        hp[starts_a] = has_prev
        inc = volume_increments(cum, pc, hp)
        bars = aggregate_groups(allt["last_price"], cum, allt["oi"], allt["recv_ts"], inc, starts_a,
                                np.asarray(base_recv, np.int64), np.vstack(greeks_rows))
        bars["instrument_token"] = [self.slots.token[s] for s, _ in keys]
        bars["bucket"] = [b for _, b in keys]
        bars["interval_s"] = self.interval_s
        return bars

    def _prev_tick(self, slot: int, b: int, retained_keys: list[int]) -> tuple[int, int] | None:
        """(cum volume, recv_ts) of the instrument's last tick before bucket ``b`` (closed buckets only)."""
        for earlier in reversed(retained_keys):
            if earlier >= b:
                continue
            hit = self.buckets[earlier].get(slot)
            if hit is not None:
                return int(hit[0]["volume"][-1]), int(hit[0]["recv_ts"][-1])
        if self.slots.base_valid[slot]:
            return int(self.slots.base_cum[slot]), int(self.slots.base_recv[slot])
        return None
