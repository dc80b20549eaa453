"""Bar arithmetic: OHLC/volume/OI/VWAP bars per instrument, bucketed by exchange time.

Pure core: no I/O and no wall clock. Time enters only through the ticks'
``exchange_ts`` (the event time), so a replay gives the same bars as the live
run. Definitions are those of DESIGN.md:

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

``BAR_DTYPE`` is the record handed to sinks and put on the ``bars`` topic.
``last_recv_ts`` (epoch microseconds of the newest tick in the bar) versions a
bar: a late tick re-emits the bar with a newer ``last_recv_ts`` and the sink
keeps the newest version.
"""

from __future__ import annotations

import numpy as np

from pipeline.columnar import decode_batch, encode_batch
from pipeline.tick_batch import GREEK_FIELDS

BAR_DTYPE = np.dtype(
    [
        ("instrument_token", "<u4"),
        ("interval_s", "<i4"),
        ("bucket", "<i8"),
        ("open", "<f8"),
        ("high", "<f8"),
        ("low", "<f8"),
        ("close", "<f8"),
        ("volume", "<i8"),
        ("oi", "<i8"),
        ("oi_open", "<i8"),
        ("oi_high", "<i8"),
        ("oi_low", "<i8"),
        ("vwap", "<f8"),
        ("tick_count", "<i4"),
        ("last_recv_ts", "<i8"),
    ]
    + [(name, "<f8") for name in GREEK_FIELDS]
)

KIND_BARS = 3


def encode_bars(underlying: str, bars: np.ndarray) -> bytes:
    """Serialise a ``BAR_DTYPE`` array for the ``bars`` topic."""
    return encode_batch(KIND_BARS, underlying, bars, BAR_DTYPE)


def decode_bars(payload: bytes) -> tuple[str, np.ndarray]:
    """Return ``(underlying, bars)``; raises ``BatchFormatError`` on a bad payload."""
    _, underlying, bars = decode_batch(payload, {KIND_BARS: BAR_DTYPE})
    return underlying, bars


# --------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------

import math  # noqa: E402
from collections.abc import Callable  # noqa: E402

from pipeline.tick_batch import PRICED_TICK_DTYPE  # noqa: E402

# What a closed bucket keeps per tick for late corrections (40 bytes a tick).
_RETAINED_DTYPE = np.dtype(
    [("exchange_ts", "<i8"), ("recv_ts", "<i8"), ("last_price", "<f8"), ("volume", "<i8"), ("oi", "<i8")]
)
_NO_TS = np.iinfo(np.int64).min
_N_GREEKS = len(GREEK_FIELDS)


class _ClosedBucket:
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
    def empty(cls) -> _ClosedBucket:
        return cls(
            np.empty(0, np.int64), np.zeros(1, np.int64), np.empty(0, _RETAINED_DTYPE), np.empty((0, _N_GREEKS))
        )

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


def _increments(cum: np.ndarray, prev_cum: np.ndarray, has_prev: np.ndarray) -> np.ndarray:
    """Volume increment of each tick: cum - previous tick's cum, 0 without a previous tick or on a reset."""
    return np.where(has_prev, np.maximum(cum - prev_cum, 0), 0)


def _aggregate(
    price: np.ndarray,
    cum: np.ndarray,
    oi: np.ndarray,
    recv: np.ndarray,
    inc: np.ndarray,
    starts: np.ndarray,
    base_recv: np.ndarray,
    greeks: np.ndarray,
) -> np.ndarray:
    """Bars of the groups ``[starts[i], starts[i+1])`` of event-ordered ticks (token/bucket/interval left 0)."""
    n = len(price)
    ends = np.empty(len(starts), np.int64)
    ends[:-1] = starts[1:] - 1
    ends[-1] = n - 1
    out = np.zeros(len(starts), BAR_DTYPE)
    out["open"] = price[starts]
    out["high"] = np.maximum.reduceat(price, starts)
    out["low"] = np.minimum.reduceat(price, starts)
    out["close"] = price[ends]
    volume = np.add.reduceat(inc, starts)
    out["volume"] = volume
    out["oi"] = oi[ends]
    out["oi_open"] = oi[starts]
    out["oi_high"] = np.maximum.reduceat(oi, starts)
    out["oi_low"] = np.minimum.reduceat(oi, starts)
    pv = np.add.reduceat(np.where(inc > 0, price * inc, 0.0), starts)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["vwap"] = np.where(volume > 0, pv / np.where(volume > 0, volume, 1), np.nan)
    out["tick_count"] = ends - starts + 1
    out["last_recv_ts"] = np.maximum(np.maximum.reduceat(recv, starts), base_recv)
    for j, name in enumerate(GREEK_FIELDS):
        out[name] = greeks[:, j]
    return out


def _as_priced(ticks: np.ndarray) -> np.ndarray:
    if ticks.dtype == PRICED_TICK_DTYPE:
        return ticks
    out = np.empty(len(ticks), PRICED_TICK_DTYPE)
    names = ticks.dtype.names or ()
    for name in PRICED_TICK_DTYPE.names:
        out[name] = ticks[name] if name in names else np.nan
    return out


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
      grace_s)`` (a tick for a bucket that is still open is never too late).
      Tick ``i`` (in receive order) with ``bucket + interval_s + L <=
      watermark_i`` (the watermark including ticks ``0..i``, so the decision
      does not depend on how ticks are split into batches) is dropped and
      counted in ``too_late_dropped``. An accepted tick for an already closed
      bucket is a late correction (counted per tick in ``late_corrections``):
      the bar of its (instrument, bucket) is recomputed from the bucket's
      retained ticks plus the late tick and emitted again. A closed bucket's
      ticks are retained until ``bucket + interval_s + L <= watermark`` and
      then freed, so memory holds only the open buckets plus that window.
    - volume: sum over the bucket's ticks of the increment ``max(0, cum -
      cum of the instrument's previous tick)`` (previous in event order, across
      buckets; an instrument's very first tick has increment 0). Without resets
      this is exactly DESIGN's "cum at the bucket's last tick minus cum at the
      previous bucket's last tick (first bucket: minus the first tick's cum)".
      A drop of the cumulative volume (new trading day) is a reset: that tick
      has increment 0 and becomes the new baseline, exactly like an
      instrument's first tick, so volume is never negative.
    - vwap: ``sum(last_price * increment) / sum(increment)`` over the bucket's
      ticks with a positive increment; NaN when the bar's volume is 0.
    - oi at the last tick, oi_open/oi_high/oi_low over the bucket; Greeks of the
      bucket's last tick.
    - last_recv_ts: the newest ``recv_ts`` among the ticks the bar is computed
      from -- the bucket's ticks and the instrument's previous tick (the volume
      baseline). A late tick that becomes the last tick of its bucket changes
      the next bucket's volume baseline, so when that next bar of the
      instrument is already closed it is re-emitted too; both re-emitted bars
      then carry the late tick's ``recv_ts``, newer than any earlier version
      (``recv_ts`` increases in receive order), and the sink's newest-wins
      upsert on ``(instrument_token, bucket)`` keeps the corrected rows. The
      newest version of every closed bar always equals the bar computed from
      all accepted ticks, whatever the batch split.

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
    ) -> None:
        if int(interval_s) != interval_s or interval_s <= 0:
            raise ValueError(f"interval_s must be a positive whole number of seconds, got {interval_s!r}")
        if grace_s < 0 or late_window_s < 0:
            raise ValueError("grace_s and late_window_s must be >= 0")
        self.interval_s = int(interval_s)
        self.on_bars = on_bars
        self.grace_s = float(grace_s)
        self.late_window_s = float(late_window_s)
        self._late = max(self.late_window_s, self.grace_s)
        self.stats: dict[str, int] = {
            "ticks": 0,
            "duplicates": 0,
            "late_corrections": 0,
            "too_late_dropped": 0,
            "bars_emitted": 0,
        }
        self._watermark: int | None = None
        self._closed_before: int | None = None  # every bucket < this is closed
        # token -> slot (dense index of the per-instrument arrays)
        self._known_tokens = np.empty(0, np.int64)  # sorted
        self._known_slots = np.empty(0, np.int64)
        self._slot_token = np.empty(0, np.uint32)
        self._last_recv = np.empty(0, np.int64)  # dedup
        # newest closed tick per instrument ("tail"): baseline of its next bucket to close
        self._tail_valid = np.empty(0, bool)
        self._tail_ex = np.empty(0, np.int64)
        self._tail_recv = np.empty(0, np.int64)
        self._tail_cum = np.empty(0, np.int64)
        # newest freed tick per instrument: baseline below the oldest retained bucket
        self._base_valid = np.empty(0, bool)
        self._base_recv = np.empty(0, np.int64)
        self._base_cum = np.empty(0, np.int64)
        # open buckets: accepted ticks not yet closed
        self._pending: list[np.ndarray] = []
        self._pending_slots: list[np.ndarray] = []
        self._pending_n = 0
        self._pending_min_ex: int | None = None  # min exchange_ts of the open ticks (cached: read per record)
        # closed buckets still inside the late window
        self._retained: dict[int, _ClosedBucket] = {}

    # ----------------------------------------------------------------- public

    def add_ticks(self, ticks: np.ndarray) -> None:
        n = len(ticks)
        if n == 0:
            return
        self.stats["ticks"] += n
        ticks = _as_priced(ticks)
        interval = self.interval_s
        slots = self._slots_for(ticks["instrument_token"])
        ex = ticks["exchange_ts"]
        recv = ticks["recv_ts"]
        bucket = ex // interval * interval

        # running watermark -> too late
        run_wm = np.maximum.accumulate(ex)
        if self._watermark is not None:
            np.maximum(run_wm, self._watermark, out=run_wm)
        too_late = bucket + (interval + self._late) <= run_wm

        dup = self._duplicates(slots, recv, too_late)
        n_dup = int(np.count_nonzero(dup))
        accepted = ~(dup | too_late)
        self.stats["duplicates"] += n_dup
        self.stats["too_late_dropped"] += int(np.count_nonzero(too_late & ~dup))
        self._watermark = int(run_wm[-1])

        out: list[np.ndarray] = []
        if not accepted.all():
            acc_idx = np.flatnonzero(accepted)
            ticks, slots, bucket = ticks[acc_idx], slots[acc_idx], bucket[acc_idx]
        if len(ticks):
            np.maximum.at(self._last_recv, slots, ticks["recv_ts"])
            if self._closed_before is not None:
                late = bucket < self._closed_before
                if late.any():
                    self.stats["late_corrections"] += int(np.count_nonzero(late))
                    out.append(self._apply_late(ticks[late], slots[late], bucket[late]))
                    keep = ~late
                    ticks, slots = ticks[keep], slots[keep]
            if len(ticks):
                self._pending.append(ticks)
                newest_min = int(ticks["exchange_ts"].min())
                if self._pending_min_ex is None or newest_min < self._pending_min_ex:
                    self._pending_min_ex = newest_min
                self._pending_slots.append(slots)
                self._pending_n += len(ticks)

        closed_before = int((self._watermark - self.grace_s) // interval) * interval
        self._close(closed_before, out)

    def flush(self) -> None:
        """Close and emit every open bar (shutdown, end of a replay)."""
        if self._pending_n == 0:
            return
        top = max(int(p["exchange_ts"].max()) for p in self._pending) // self.interval_s * self.interval_s
        out: list[np.ndarray] = []
        self._close(top + self.interval_s, out)

    def state_size(self) -> dict[str, int]:
        """What the aggregator holds: open ticks, retained closed buckets and their ticks."""
        return {
            "open_ticks": self._pending_n,
            "retained_buckets": len(self._retained),
            "retained_ticks": sum(b.n_ticks() for b in self._retained.values()),
            "instruments": len(self._slot_token),
        }

    def oldest_open_bucket(self) -> int | None:
        """Start of the oldest bucket holding open (not yet closed) ticks; None when nothing is open.

        Read-only. Every accepted tick with ``exchange_ts`` before it is in a closed bucket.
        """
        if self._pending_n == 0:
            return None
        return self._pending_min_ex // self.interval_s * self.interval_s

    def replay_from(self) -> int | None:
        """The oldest exchange time whose ticks are still needed to rebuild the open bars from scratch.

        That is the start of the oldest open bucket, or earlier: the newest closed tick (the
        volume baseline of its next bar) of every instrument whose newest closed tick lies in the
        interval before that bucket (older baselines are not waited for, so this is never earlier
        than ``oldest_open_bucket() - interval_s``). None when nothing is open. Read-only.
        """
        oldest = self.oldest_open_bucket()
        if oldest is None:
            return None
        floor = oldest - self.interval_s
        tails = self._tail_ex[self._tail_valid]
        tails = tails[tails >= floor]
        return min(oldest, int(tails.min())) if len(tails) else oldest

    # ------------------------------------------------------------- internals

    def _slots_for(self, tokens: np.ndarray) -> np.ndarray:
        tokens = tokens.astype(np.int64)
        known = self._known_tokens
        idx = np.searchsorted(known, tokens)
        if len(known):
            found = known[np.minimum(idx, len(known) - 1)] == tokens
            if found.all():
                return self._known_slots[idx]
            new = np.unique(tokens[~found])
        else:
            new = np.unique(tokens)
        first = len(self._slot_token)
        all_tokens = np.concatenate([known, new])
        all_slots = np.concatenate([self._known_slots, np.arange(first, first + len(new))])
        order = np.argsort(all_tokens, kind="stable")
        self._known_tokens, self._known_slots = all_tokens[order], all_slots[order]
        k = len(new)
        self._slot_token = np.concatenate([self._slot_token, new.astype(np.uint32)])
        self._last_recv = np.concatenate([self._last_recv, np.full(k, _NO_TS)])
        self._tail_valid = np.concatenate([self._tail_valid, np.zeros(k, bool)])
        self._tail_ex = np.concatenate([self._tail_ex, np.zeros(k, np.int64)])
        self._tail_recv = np.concatenate([self._tail_recv, np.zeros(k, np.int64)])
        self._tail_cum = np.concatenate([self._tail_cum, np.zeros(k, np.int64)])
        self._base_valid = np.concatenate([self._base_valid, np.zeros(k, bool)])
        self._base_recv = np.concatenate([self._base_recv, np.zeros(k, np.int64)])
        self._base_cum = np.concatenate([self._base_cum, np.zeros(k, np.int64)])
        return self._known_slots[np.searchsorted(self._known_tokens, tokens)]

    def _duplicates(self, slots: np.ndarray, recv: np.ndarray, too_late: np.ndarray) -> np.ndarray:
        """recv_ts <= newest accepted recv_ts of the instrument (state, or earlier in this batch)."""
        n = len(slots)
        dup = recv <= self._last_recv[slots]
        if n == 1 or bool((recv[1:] > recv[:-1]).all()):
            return dup  # receive order = recv_ts order: no redelivery inside the batch
        order = np.argsort(slots, kind="stable")
        s = slots[order]
        _, rank = np.unique(recv[order], return_inverse=True)
        rank = rank.reshape(-1) + 1
        width = n + 1
        # grouped running max of (rank of accepted ticks), by slot, in receive order
        val = np.where(too_late[order], 0, rank) + s * width
        cm = np.maximum.accumulate(val)
        prev = np.empty(n, np.int64)
        prev[0] = 0
        prev[1:] = cm[:-1] - s[1:] * width
        group_start = np.empty(n, bool)
        group_start[0] = True
        np.not_equal(s[1:], s[:-1], out=group_start[1:])
        prev[group_start] = 0
        dup_sorted = rank <= prev
        dup[order] |= dup_sorted
        return dup

    def _apply_late(self, ticks: np.ndarray, slots: np.ndarray, bucket: np.ndarray) -> np.ndarray:
        """Merge accepted ticks of closed buckets into the retained state; the corrected bars."""
        interval = self.interval_s
        touched: set[tuple[int, int]] = set()
        baseline_moved: list[tuple[int, int]] = []
        order = np.lexsort((ticks["recv_ts"], ticks["exchange_ts"], bucket, slots))
        ticks, slots, bucket = ticks[order], slots[order], bucket[order]
        cut = np.flatnonzero((slots[1:] != slots[:-1]) | (bucket[1:] != bucket[:-1])) + 1
        bounds = np.concatenate([[0], cut, [len(ticks)]])
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            slot, b = int(slots[lo]), int(bucket[lo])
            closed = self._retained.get(b)
            if closed is None:
                closed = self._retained[b] = _ClosedBucket.empty()
            new = np.empty(hi - lo, _RETAINED_DTYPE)
            for name in _RETAINED_DTYPE.names:
                new[name] = ticks[name][lo:hi]
            cur = closed.get(slot)
            if cur is None:
                merged, greeks = new, None
                old_last = None
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
                if not self._tail_valid[slot] or new_last > (int(self._tail_ex[slot]), int(self._tail_recv[slot])):
                    self._tail_valid[slot] = True
                    self._tail_ex[slot], self._tail_recv[slot] = new_last
                    self._tail_cum[slot] = int(merged["volume"][-1])
            closed.override[slot] = (merged, greeks)
            touched.add((slot, b))
        retained_keys = sorted(self._retained)
        for slot, b in baseline_moved:
            for later in retained_keys:
                if later > b and self._retained[later].get(slot) is not None:
                    touched.add((slot, later))
                    break
        keys = sorted(touched, key=lambda k: (k[1], int(self._slot_token[k[0]])))
        parts, starts, prev_cum, has_prev, base_recv, greeks_rows = [], [], [], [], [], []
        pos = 0
        for slot, b in keys:
            tk, gk = self._retained[b].get(slot)
            prev = self._prev_tick(slot, b, retained_keys)
            parts.append(tk)
            starts.append(pos)
            pos += len(tk)
            has_prev.append(prev is not None)
            prev_cum.append(prev[0] if prev else 0)
            base_recv.append(prev[1] if prev else _NO_TS)
            greeks_rows.append(gk)
        allt = np.concatenate(parts)
        starts_a = np.asarray(starts, np.int64)
        cum = allt["volume"]
        pc = np.empty(len(allt), np.int64)
        pc[1:] = cum[:-1]
        pc[starts_a] = prev_cum
        hp = np.ones(len(allt), bool)
        hp[starts_a] = has_prev
        inc = _increments(cum, pc, hp)
        bars = _aggregate(
            allt["last_price"], cum, allt["oi"], allt["recv_ts"], inc, starts_a,
            np.asarray(base_recv, np.int64), np.vstack(greeks_rows),
        )
        bars["instrument_token"] = [self._slot_token[s] for s, _ in keys]
        bars["bucket"] = [b for _, b in keys]
        bars["interval_s"] = interval
        return bars

    def _prev_tick(self, slot: int, b: int, retained_keys: list[int]) -> tuple[int, int] | None:
        """(cum volume, recv_ts) of the instrument's last tick before bucket ``b`` (closed buckets only)."""
        for earlier in reversed(retained_keys):
            if earlier >= b:
                continue
            hit = self._retained[earlier].get(slot)
            if hit is not None:
                return int(hit[0]["volume"][-1]), int(hit[0]["recv_ts"][-1])
        if self._base_valid[slot]:
            return int(self._base_cum[slot]), int(self._base_recv[slot])
        return None

    def _free(self) -> None:
        limit = self._watermark - self.interval_s - self._late  # free b <= limit
        for b in sorted(self._retained):
            if b > limit:
                break
            closed = self._retained.pop(b)
            if len(closed.slots):
                ends = closed.starts[1:] - 1
                self._base_valid[closed.slots] = True
                self._base_cum[closed.slots] = closed.ticks["volume"][ends]
                self._base_recv[closed.slots] = closed.ticks["recv_ts"][ends]
            for slot, (tk, _) in closed.override.items():
                self._base_valid[slot] = True
                self._base_cum[slot] = tk["volume"][-1]
                self._base_recv[slot] = tk["recv_ts"][-1]

    def _close(self, closed_before: int, out: list[np.ndarray]) -> None:
        """Close every bucket < ``closed_before``, free what left the late window, emit ``out`` + closed bars."""
        if self._closed_before is None or closed_before > self._closed_before:
            self._closed_before = closed_before
            if self._pending_n:
                out.extend(self._close_pending(closed_before))
        if self._retained and self._watermark is not None:
            self._free()
        out = [o for o in out if len(o)]
        if not out:
            return
        bars = out[0] if len(out) == 1 else np.concatenate(out)
        if len(bars) > 1:
            bars = bars[np.lexsort((bars["instrument_token"], bars["bucket"]))]
        self.stats["bars_emitted"] += len(bars)
        self.on_bars(bars)

    def _close_pending(self, closed_before: int) -> list[np.ndarray]:
        interval = self.interval_s
        pend = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        pslots = self._pending_slots[0] if len(self._pending_slots) == 1 else np.concatenate(self._pending_slots)
        pbucket = pend["exchange_ts"] // interval * interval
        closing = pbucket < closed_before
        if not closing.any():
            self._pending, self._pending_slots = [pend], [pslots]
            return []
        if closing.all():
            self._pending, self._pending_slots, self._pending_n = [], [], 0
            self._pending_min_ex = None
            t, slot, bucket = pend, pslots, pbucket
        else:
            keep = ~closing
            self._pending, self._pending_slots = [pend[keep]], [pslots[keep]]
            self._pending_n = len(self._pending[0])
            self._pending_min_ex = int(self._pending[0]["exchange_ts"].min())
            t, slot, bucket = pend[closing], pslots[closing], pbucket[closing]

        # slot-major event order: increments and baselines
        ex, recv = t["exchange_ts"], t["recv_ts"]
        order = np.lexsort((recv, ex, slot))
        slot, bucket, ex, recv = slot[order], bucket[order], ex[order], recv[order]
        t = t[order]
        cum = t["volume"]
        n = len(t)
        first_of_slot = np.empty(n, bool)
        first_of_slot[0] = True
        np.not_equal(slot[1:], slot[:-1], out=first_of_slot[1:])
        fs = np.flatnonzero(first_of_slot)
        fslot = slot[fs]
        prev_cum = np.empty(n, np.int64)
        prev_cum[1:] = cum[:-1]
        prev_cum[fs] = self._tail_cum[fslot]
        prev_recv = np.empty(n, np.int64)
        prev_recv[1:] = recv[:-1]
        prev_recv[fs] = np.where(self._tail_valid[fslot], self._tail_recv[fslot], _NO_TS)
        has_prev = np.ones(n, bool)
        has_prev[fs] = self._tail_valid[fslot]
        inc = _increments(cum, prev_cum, has_prev)
        # new tails: each slot's last tick
        ls = np.empty(len(fs), np.int64)
        ls[:-1] = fs[1:] - 1
        ls[-1] = n - 1
        lslot = slot[ls]
        self._tail_valid[lslot] = True
        self._tail_ex[lslot] = ex[ls]
        self._tail_recv[lslot] = recv[ls]
        self._tail_cum[lslot] = cum[ls]

        if bucket.min() != bucket.max():  # several buckets close at once: bucket-major
            o2 = np.argsort(bucket, kind="stable")
            slot, bucket, recv, t, cum, inc, prev_recv = (
                slot[o2], bucket[o2], recv[o2], t[o2], cum[o2], inc[o2], prev_recv[o2]
            )
        gstart = np.empty(n, bool)
        gstart[0] = True
        gstart[1:] = (slot[1:] != slot[:-1]) | (bucket[1:] != bucket[:-1])
        starts = np.flatnonzero(gstart)
        ends = np.empty(len(starts), np.int64)
        ends[:-1] = starts[1:] - 1
        ends[-1] = n - 1
        greeks = np.empty((len(starts), _N_GREEKS))
        for j, name in enumerate(GREEK_FIELDS):
            greeks[:, j] = t[name][ends]
        bars = _aggregate(t["last_price"], cum, t["oi"], recv, inc, starts, prev_recv[starts], greeks)
        gslot = slot[starts]
        gbucket = bucket[starts]
        bars["instrument_token"] = self._slot_token[gslot]
        bars["bucket"] = gbucket
        bars["interval_s"] = interval

        # retain for late corrections (or fold straight into the freed baseline)
        free_limit = self._watermark - interval - self._late if self._watermark is not None else -math.inf
        bcut = np.flatnonzero(gbucket[1:] != gbucket[:-1]) + 1
        gb = np.concatenate([[0], bcut, [len(starts)]])
        for g0, g1 in zip(gb[:-1].tolist(), gb[1:].tolist()):
            b = int(gbucket[g0])
            s_ = gslot[g0:g1]
            if b <= free_limit:
                e_ = ends[g0:g1]
                self._base_valid[s_] = True
                self._base_cum[s_] = cum[e_]
                self._base_recv[s_] = recv[e_]
                continue
            lo, hi = int(starts[g0]), int(ends[g1 - 1]) + 1
            kept = np.empty(hi - lo, _RETAINED_DTYPE)
            kept["exchange_ts"] = t["exchange_ts"][lo:hi]
            kept["recv_ts"] = recv[lo:hi]
            kept["last_price"] = t["last_price"][lo:hi]
            kept["volume"] = cum[lo:hi]
            kept["oi"] = t["oi"][lo:hi]
            rel = np.append(starts[g0:g1] - lo, hi - lo)
            self._retained[b] = _ClosedBucket(s_.copy(), rel, kept, greeks[g0:g1].copy())
        return [bars]


__all__ = ["BAR_DTYPE", "KIND_BARS", "BarAggregator", "decode_bars", "encode_bars"]
