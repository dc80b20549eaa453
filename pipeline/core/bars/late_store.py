"""Closed buckets kept for late corrections, and the corrected bars a late tick produces.

A closed bucket keeps, per instrument, its ticks in event order (40 bytes a
tick: ``RETAINED_DTYPE``, ``volume`` the raw cumulative volume), the Greeks of
its last tick and the running maximum of cumulative volume at its end (the
volume baseline of the instrument's next bar), until the bucket leaves the late
window (``pipeline.core.bars.watermark``); then its last ticks become the
instruments' freed baseline (``SlotTable`` base) and it is dropped. A late tick
merges into its bucket's copy and the bar is rebuilt from the merged ticks;
while a rebuilt bar's end (running maximum, last tick) differs from before, the
instrument's next retained bar is rebuilt too, since its volume baseline moved.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pipeline.core.bars.builder import (
    N_CLOSE_FIELDS,
    aggregate_groups,
    running_volume,
    trading_day,
)
from pipeline.core.bars.slots import NO_TS, SlotTable
from pipeline.core.state import ragged
from pipeline.records.ticks import CLOSE_FIELDS

RETAINED_DTYPE = np.dtype(
    [("exchange_ts", "<i8"), ("recv_ts", "<i8"), ("last_price", "<f8"), ("volume", "<i8"), ("oi", "<i8")]
)


def retained_copy(ticks: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Rows ``lo:hi`` of priced ticks as ``RETAINED_DTYPE`` (``volume`` is the cumulative volume)."""
    kept = np.empty(hi - lo, RETAINED_DTYPE)
    for name in RETAINED_DTYPE.names:
        kept[name] = ticks[name][lo:hi]
    return kept


class Group(NamedTuple):
    """One instrument's part of a closed bucket."""

    ticks: np.ndarray  # RETAINED_DTYPE, event order
    greeks: np.ndarray  # of the last tick, len(CLOSE_FIELDS)
    m_end: int  # running maximum of the day's cumulative volume at the last tick


class Baseline(NamedTuple):
    """What a bar's volume continues from: the instrument's previous closed tick."""

    m: int
    recv_ts: int
    exchange_ts: int


class ClosedBucket:
    """The retained ticks of one closed bucket, all instruments, grouped by slot.

    ``ticks[starts[i]:starts[i + 1]]`` are the ticks (event order) of slot ``slots[i]`` (sorted);
    ``greeks[i]`` the Greeks of its last tick, ``m_end[i]`` its running volume maximum there. A late
    tick replaces the instrument's group by a merged copy in ``override``.
    """

    __slots__ = ("slots", "starts", "ticks", "greeks", "m_end", "override")

    def __init__(self, slots: np.ndarray, starts: np.ndarray, ticks: np.ndarray, greeks: np.ndarray,
                 m_end: np.ndarray) -> None:
        self.slots = slots
        self.starts = starts
        self.ticks = ticks
        self.greeks = greeks
        self.m_end = m_end
        self.override: dict[int, Group] = {}

    @classmethod
    def empty(cls) -> ClosedBucket:
        return cls(np.empty(0, np.int64), np.zeros(1, np.int64), np.empty(0, RETAINED_DTYPE), np.empty((0, N_CLOSE_FIELDS)),
                   np.empty(0, np.int64))

    def get(self, slot: int) -> Group | None:
        hit = self.override.get(slot)
        if hit is not None:
            return hit
        i = int(np.searchsorted(self.slots, slot))
        if i < len(self.slots) and self.slots[i] == slot:
            return Group(self.ticks[self.starts[i] : self.starts[i + 1]], self.greeks[i], int(self.m_end[i]))
        return None

    def n_ticks(self) -> int:
        replaced = sum(int(self.starts[i + 1] - self.starts[i]) for i in np.searchsorted(self.slots, list(self.override)))
        return len(self.ticks) - replaced + sum(len(g.ticks) for g in self.override.values())


def _end(group: Group) -> tuple[int, int]:
    """What the next bar's baseline takes from a group: (running maximum, recv_ts of its last tick)."""
    return group.m_end, int(group.ticks["recv_ts"][-1])


class LateTickStore:
    """The closed buckets still inside the late window of one aggregator, by bucket start."""

    def __init__(self, slots: SlotTable, interval_s: int) -> None:
        self.slots = slots
        self.interval_s = interval_s
        self.buckets: dict[int, ClosedBucket] = {}

    def to_state(self) -> dict[str, np.ndarray]:
        """The retained buckets as flat arrays: per bucket (ascending ``keys``) its groups (``n_groups``
        slots, their tick counts, greeks and ``m_end``) and its overriding groups (``n_override``)."""
        keys = sorted(self.buckets)
        closed = [self.buckets[b] for b in keys]
        over = [(slot, g) for c in closed for slot, g in sorted(c.override.items())]
        return {
            "keys": np.array(keys, np.int64),
            "n_groups": np.array([len(c.slots) for c in closed], np.int64),
            "slots": ragged([c.slots for c in closed], np.int64)[0],
            "group_ticks": ragged([np.diff(c.starts) for c in closed], np.int64)[0],
            "ticks": ragged([c.ticks for c in closed], RETAINED_DTYPE)[0],
            "greeks": np.concatenate([c.greeks for c in closed]) if closed else np.empty((0, N_CLOSE_FIELDS)),
            "m_end": ragged([c.m_end for c in closed], np.int64)[0],
            "n_override": np.array([len(c.override) for c in closed], np.int64),
            "override_slots": np.array([slot for slot, _ in over], np.int64),
            "override_ticks_n": np.array([len(g.ticks) for _, g in over], np.int64),
            "override_ticks": ragged([g.ticks for _, g in over], RETAINED_DTYPE)[0],
            "override_greeks": np.array([g.greeks for _, g in over], np.float64).reshape(len(over), N_CLOSE_FIELDS),
            "override_m_end": np.array([g.m_end for _, g in over], np.int64),
        }

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Replace the retained buckets by :meth:`to_state`'s."""
        self.buckets = {}
        g0 = t0 = o0 = ot0 = 0
        for b, n, n_over in zip(state["keys"].tolist(), state["n_groups"].tolist(), state["n_override"].tolist(),
                                strict=True):
            counts = state["group_ticks"][g0:g0 + n]
            starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            closed = ClosedBucket(state["slots"][g0:g0 + n].copy(), starts,
                                  state["ticks"][t0:t0 + int(starts[-1])].copy(),
                                  state["greeks"][g0:g0 + n].copy(), state["m_end"][g0:g0 + n].copy())
            for i in range(o0, o0 + n_over):
                k = int(state["override_ticks_n"][i])
                closed.override[int(state["override_slots"][i])] = Group(
                    state["override_ticks"][ot0:ot0 + k].copy(), state["override_greeks"][i].copy(),
                    int(state["override_m_end"][i]))
                ot0 += k
            self.buckets[int(b)] = closed
            g0, t0, o0 = g0 + n, t0 + int(starts[-1]), o0 + n_over

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
                self.slots.set_base(closed.slots, closed.ticks["exchange_ts"][ends], closed.ticks["recv_ts"][ends],
                                    closed.m_end)
            for slot, group in closed.override.items():
                last = group.ticks[-1]
                self.slots.set_base(slot, int(last["exchange_ts"]), int(last["recv_ts"]), group.m_end)

    def correct(self, ticks: np.ndarray, slots: np.ndarray, bucket: np.ndarray) -> np.ndarray:
        """Merge accepted ticks of closed buckets into the retained state; the corrected bars (BAR_DTYPE)."""
        merged, first_seen, before = self._merge(ticks, slots, bucket)
        keys = sorted(self.buckets)
        rebuilt: list[tuple[int, int]] = []
        parts: list[np.ndarray] = []
        for slot in sorted({s for s, _ in merged}):
            start = min(b for s, b in merged if s == slot)
            carry = False  # the previous rebuilt bar's end moved: this bar's baseline did
            newest = None
            for b in keys:
                group = self.buckets[b].get(slot) if b >= start else None
                if group is None:
                    continue
                if (slot, b) not in merged and not carry:
                    newest = b
                    continue
                old_end = before.get((slot, b), _end(group))
                bar, new_end = self._rebuild(slot, b, keys)
                parts.append(bar)
                rebuilt.append((slot, b))
                carry = new_end != old_end
                newest = b
            self._refresh_tail(slot, newest)
        order = sorted(range(len(rebuilt)), key=lambda i: (rebuilt[i][1], int(self.slots.token[rebuilt[i][0]])))
        bars = np.concatenate([parts[i] for i in order])
        # a bar the late ticks created (nothing of it was emitted before) is not a correction
        bars["correction"] = [0 if rebuilt[i] in first_seen else 1 for i in order]
        return bars

    def _merge(self, ticks: np.ndarray, slots: np.ndarray, bucket: np.ndarray
               ) -> tuple[set[tuple[int, int]], set[tuple[int, int]], dict[tuple[int, int], tuple[int, int]]]:
        """Merge each (instrument, bucket) group of late ticks; the (slot, bucket)s merged, those that had
        no bar before, and the end (running maximum, last recv_ts) each had before."""
        merged: set[tuple[int, int]] = set()
        first_seen: set[tuple[int, int]] = set()
        before: dict[tuple[int, int], tuple[int, int]] = {}
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
                all_ticks, greeks = new, None
                first_seen.add((slot, b))
                before[(slot, b)] = (-1, NO_TS)
            else:
                all_ticks = np.concatenate([cur.ticks, new])
                all_ticks = all_ticks[np.lexsort((all_ticks["recv_ts"], all_ticks["exchange_ts"]))]
                greeks = cur.greeks
                before[(slot, b)] = _end(cur)
            if cur is None or (int(all_ticks["exchange_ts"][-1]), int(all_ticks["recv_ts"][-1])) != (
                    int(cur.ticks["exchange_ts"][-1]), int(cur.ticks["recv_ts"][-1])):
                last = ticks[hi - 1]  # the last tick is one of the new ones (the newest by event order)
                greeks = np.array([last[g] for g in CLOSE_FIELDS], np.float64)
            closed.override[slot] = Group(all_ticks, greeks, -1)  # m_end: set by _rebuild
            merged.add((slot, b))
        return merged, first_seen, before

    def _rebuild(self, slot: int, b: int, retained_keys: list[int]) -> tuple[np.ndarray, tuple[int, int]]:
        """The bar of (slot, bucket b) from its retained ticks and baseline (stored back with its new
        running maximum); and its new end."""
        group = self.buckets[b].get(slot)
        prev = self._baseline(slot, b, retained_keys)
        continues = prev is not None and trading_day(prev.exchange_ts) == trading_day(b)
        tk = group.ticks
        start = np.zeros(len(tk), bool)
        start[0] = True
        maximum, inc = running_volume(tk["volume"], start, np.array([prev.m if continues else 0]),
                                      np.array([continues]))
        bar = aggregate_groups(tk["last_price"], tk["oi"], tk["recv_ts"], inc, np.zeros(1, np.int64),
                               np.array([prev.recv_ts if prev else NO_TS]), group.greeks[None, :])
        bar["instrument_token"] = self.slots.token[slot]
        bar["bucket"] = b
        bar["interval_s"] = self.interval_s
        self.buckets[b].override[slot] = group = Group(tk, group.greeks, int(maximum[-1]))
        return bar, _end(group)

    def _baseline(self, slot: int, b: int, retained_keys: list[int]) -> Baseline | None:
        """The instrument's last closed tick before bucket ``b`` (retained buckets, then the freed base)."""
        for earlier in reversed(retained_keys):
            if earlier >= b:
                continue
            hit = self.buckets[earlier].get(slot)
            if hit is not None:
                return Baseline(hit.m_end, int(hit.ticks["recv_ts"][-1]), int(hit.ticks["exchange_ts"][-1]))
        s = self.slots
        if s.base_valid[slot]:
            return Baseline(int(s.base_cum[slot]), int(s.base_recv[slot]), int(s.base_ex[slot]))
        return None

    def _refresh_tail(self, slot: int, newest: int | None) -> None:
        """The tail is the last tick of the slot's newest closed bucket: a late tick can be it, and a late
        tick can raise the running maximum it carries."""
        if newest is None:
            return
        group = self.buckets[newest].get(slot)
        s = self.slots
        last = (int(group.ticks["exchange_ts"][-1]), int(group.ticks["recv_ts"][-1]))
        if not s.tail_valid[slot] or last >= (int(s.tail_ex[slot]), int(s.tail_recv[slot])):
            s.set_tail(slot, last[0], last[1], group.m_end)
