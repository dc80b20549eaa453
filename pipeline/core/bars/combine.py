"""Bars of a coarser interval (5, 15 minutes) combined from the finest interval's bars (1 minute).

docs/design.md: one late-tick rule for every interval, so a 5-minute bar always equals
its five 1-minute bars. The finest interval's :class:`BarAggregator` decides
which ticks count, once; a :class:`BarCombiner` only combines the fine bars it
emits (closes and corrections), so the coarse intervals hold no ticks at all:
memory and checkpoints grow with the instruments, not with 15 minutes of ticks.

Combining the fine bars of one instrument in one coarse bucket (in time order):
open of the first, high the max, low the min, close of the last; volume the sum
(each fine bar's volume is the rise of the day's running maximum since the
previous bar, so the sum telescopes to the coarse bar's); vwap the
volume-weighted mean of the fine vwaps (NaN when the volume is 0: the same
``sum(price x increment) / sum(increment)`` up to rounding); oi of the last,
oi_open of the first, oi_high the max, oi_low the min; tick_count the sum;
last_recv_ts the newest; Greeks of the last.

Closing: a coarse bucket ``b`` closes when every fine bucket in it has closed
(the fine aggregator's ``closed_before`` reaches ``b + interval_s``), which is
exactly when ``b + interval_s + grace_s <= watermark``. A fine bar emitted again
for a coarse bucket already closed re-emits the coarse bar (``correction`` 1);
one for a bucket still open just replaces its earlier version. A fine bar for a
coarse bucket that closed before any of its fine bars was seen here (the worker
started or restarted after it began, and a late tick reached one of its minutes)
opens it and emits the coarse bar as a correction: every fine bar reaches its
coarse bars (the sink keeps the version with the most ticks, so a coarse bar made
only of what this worker saw never replaces a fuller one stored before). A coarse
bucket is kept while the fine aggregator still keeps its last fine bucket for
corrections, then dropped.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.state import field, optional_int, ragged, unragged
from pipeline.records.bars import BAR_DTYPE
from pipeline.records.ticks import CLOSE_FIELDS

_LAST = ("close", "oi", *CLOSE_FIELDS)  # fields taken from the last fine bar


class BarCombiner:
    """Coarse bars of ``interval_s`` from fine bars of ``fine_interval_s`` (which must divide it)."""

    def __init__(self, interval_s: int, fine_interval_s: int) -> None:
        if interval_s <= fine_interval_s or interval_s % fine_interval_s:
            raise ValueError(f"a {interval_s}s bar cannot be combined from {fine_interval_s}s bars")
        self.interval_s = int(interval_s)
        self.fine_interval_s = int(fine_interval_s)
        self._fine: dict[int, list[np.ndarray]] = {}  # coarse bucket -> fine bars received, in order
        self._closed_before: int | None = None  # every coarse bucket below this is closed (emitted)
        self.stats = {"bars_emitted": 0, "unmatched_corrections": 0}

    def to_state(self) -> dict:
        """Explicit state (``pipeline.core.state``): the fine bars held per coarse bucket, the closed edge and
        the counters."""
        keys = sorted(self._fine)
        parts = [np.concatenate(self._fine[b]) for b in keys]
        rows, lengths = ragged(parts, BAR_DTYPE)
        return {"keys": np.array(keys, np.int64), "lengths": lengths, "rows": rows,
                "closed_before": self._closed_before,
                **{f"stats/{name}": value for name, value in self.stats.items()}}

    def restore(self, state: dict) -> None:
        parts = unragged(np.asarray(field(state, "rows")), np.asarray(field(state, "lengths")))
        self._fine = {int(b): [part] for b, part in zip(np.asarray(field(state, "keys")).tolist(), parts, strict=True)}
        self._closed_before = optional_int(field(state, "closed_before"))
        self.stats = {name: int(field(state, f"stats/{name}")) for name in self.stats}

    def add(self, fine_bars: np.ndarray, fine_closed_before: int | None, fine_free_limit: float) -> np.ndarray | None:
        """Take the fine aggregator's emitted bars and its state after them (every fine bucket below
        ``fine_closed_before`` is closed; fine buckets ``<= fine_free_limit`` are out of its late window);
        the coarse bars this closes or corrects (None: none)."""
        out: list[np.ndarray] = []
        if fine_bars is not None and len(fine_bars):
            out.extend(self._take(fine_bars, fine_free_limit))
        if fine_closed_before is not None:
            closing = fine_closed_before // self.interval_s * self.interval_s
            if self._closed_before is None or closing > self._closed_before:
                due = sorted(b for b in self._fine if (self._closed_before is None or b >= self._closed_before)
                             and b < closing)
                out.extend(combine(np.concatenate(self._fine[b]), self.interval_s, b, correction=0) for b in due)
                self._closed_before = closing
        for b in [b for b in self._fine if b + self.interval_s - self.fine_interval_s <= fine_free_limit]:
            del self._fine[b]
        out = [o for o in out if len(o)]
        if not out:
            return None
        bars = np.concatenate(out)
        if len(out) > 1:
            bars = bars[np.lexsort((bars["instrument_token"], bars["bucket"]))]
        self.stats["bars_emitted"] += len(bars)
        return bars

    def _take(self, fine_bars: np.ndarray, fine_free_limit: float) -> list[np.ndarray]:
        """Store fine bars by coarse bucket; the corrections of coarse bars already closed."""
        coarse = fine_bars["bucket"] // self.interval_s * self.interval_s
        out = []
        for b in np.unique(coarse).tolist():
            rows = fine_bars[coarse == b]
            closed = self._closed_before is not None and b < self._closed_before
            dropped = b + self.interval_s - self.fine_interval_s <= fine_free_limit
            if closed and b not in self._fine and dropped:  # cannot happen while retention follows the fine late store
                self.stats["unmatched_corrections"] += len(rows)
                continue
            self._fine.setdefault(b, []).append(rows)
            if closed:
                merged = combine(np.concatenate(self._fine[b]), self.interval_s, b, correction=1)
                out.append(merged[np.isin(merged["instrument_token"], rows["instrument_token"])])
        return out


def combine(fine: np.ndarray, interval_s: int, bucket: int, correction: int) -> np.ndarray:
    """One coarse bar per instrument from fine bars (``BAR_DTYPE``, later rows newer versions of earlier ones)."""
    if not len(fine):
        return np.empty(0, BAR_DTYPE)
    # the newest version of each fine bar: the last emitted row of each (token, fine bucket)
    order = np.lexsort((np.arange(len(fine)), fine["bucket"], fine["instrument_token"]))
    f = fine[order]
    same_next = np.zeros(len(f), bool)
    same_next[:-1] = (f["instrument_token"][1:] == f["instrument_token"][:-1]) & (f["bucket"][1:] == f["bucket"][:-1])
    f = f[~same_next]  # sorted by (token, fine bucket), one row each
    starts = np.flatnonzero(np.r_[True, f["instrument_token"][1:] != f["instrument_token"][:-1]])
    ends = np.r_[starts[1:] - 1, len(f) - 1]
    out = np.zeros(len(starts), BAR_DTYPE)
    out["instrument_token"] = f["instrument_token"][starts]
    out["interval_s"] = interval_s
    out["bucket"] = bucket
    out["open"] = f["open"][starts]
    out["oi_open"] = f["oi_open"][starts]
    for name in _LAST:
        out[name] = f[name][ends]
    out["high"] = np.maximum.reduceat(f["high"], starts)
    out["low"] = np.minimum.reduceat(f["low"], starts)
    out["oi_high"] = np.maximum.reduceat(f["oi_high"], starts)
    out["oi_low"] = np.minimum.reduceat(f["oi_low"], starts)
    volume = np.add.reduceat(f["volume"], starts)
    out["volume"] = volume
    out["tick_count"] = np.add.reduceat(f["tick_count"], starts)
    out["last_recv_ts"] = np.maximum.reduceat(f["last_recv_ts"], starts)
    pv = np.add.reduceat(np.where(f["volume"] > 0, f["vwap"] * f["volume"], 0.0), starts)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["vwap"] = np.where(volume > 0, pv / np.where(volume > 0, volume, 1), np.nan)
    out["correction"] = correction
    return out
