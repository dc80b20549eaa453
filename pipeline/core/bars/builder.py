"""Building bars from grouped ticks: the arithmetic of one bar, for many bars at once.

Pure functions over numpy arrays (the BarBuilder of the design: it computes a
bar from its ticks and says nothing about when a bar closes; that is
``pipeline.core.bars.watermark`` and ``pipeline.core.bars.aggregator``).
Definitions (docs/design.md): OHLC of ``last_price`` in event order; volume the sum
of the ticks' increments of cumulative volume; OI at the last tick and its
open/high/low; VWAP over the increments (NaN when volume is 0); Greeks of the
last tick. A tick's increment is the rise of its instrument's running maximum of
cumulative volume within the IST trading day (``running_volume``): 0 for the day's
first tick, 0 for a dip below the maximum, and a recovery counts only what exceeds it.
"""

from __future__ import annotations

import numpy as np

from pipeline.records.bars import BAR_DTYPE
from pipeline.records.ticks import CLOSE_FIELDS, PRICED_TICK_DTYPE
from pipeline.records.time_units import IST_OFFSET_SECONDS, SECONDS_PER_DAY

N_CLOSE_FIELDS = len(CLOSE_FIELDS)


def trading_day(exchange_ts: np.ndarray | int) -> np.ndarray | int:
    """The IST trading day (days since the epoch, in IST) of exchange times in epoch seconds. A bar bucket
    never spans two: IST midnight (18:30 UTC) is a 1/5/15-minute boundary."""
    return (exchange_ts + IST_OFFSET_SECONDS) // SECONDS_PER_DAY


def running_volume(cum: np.ndarray, segment_start: np.ndarray, init: np.ndarray, has_init: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(running maximum of the cumulative volume, increment) of each tick, over segments of one instrument's
    ticks of one trading day in event order (docs/design.md: a cumulative volume below the running maximum is
    ignored, so a dip never counts twice when it recovers).

    ``segment_start`` marks each segment's first tick; ``init``/``has_init`` per segment start: the running
    maximum the segment continues from (the instrument's earlier ticks of that day), if any. A segment
    without one starts from its first tick: increment 0 (docs/design.md: "minus its first tick's cumulative volume").
    """
    n = len(cum)
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    starts = np.flatnonzero(segment_start)
    values = cum.astype(np.int64).copy()
    values[starts] = np.where(has_init, np.maximum(values[starts], init), values[starts])
    seg = np.cumsum(segment_start) - 1
    top = int(values.max()) + 1
    if (int(seg[-1]) + 1) * top < 2**62:  # one cumulative max over all segments, each lifted above the last
        maximum = np.maximum.accumulate(values + seg * top) - seg * top
    else:  # pragma: no cover - astronomically large volumes: segment by segment
        maximum = np.concatenate([np.maximum.accumulate(part) for part in np.split(values, starts[1:])])
    previous = np.empty(n, np.int64)
    previous[1:] = maximum[:-1]
    previous[starts] = np.where(has_init, init, cum[starts])
    return maximum, maximum - previous


def group_ends(starts: np.ndarray, n: int) -> np.ndarray:
    """Index of the last row of each group ``[starts[i], starts[i+1])`` of ``n`` rows."""
    ends = np.empty(len(starts), np.int64)
    ends[:-1] = starts[1:] - 1
    ends[-1] = n - 1
    return ends


def aggregate_groups(
    price: np.ndarray,
    oi: np.ndarray,
    recv: np.ndarray,
    inc: np.ndarray,
    starts: np.ndarray,
    base_recv: np.ndarray,
    greeks: np.ndarray,
) -> np.ndarray:
    """Bars of the groups ``[starts[i], starts[i+1])`` of event-ordered ticks (token/bucket/interval left 0).

    ``inc``: each tick's volume increment; ``base_recv``: per group the ``recv_ts`` of the volume
    baseline (the instrument's previous tick), which versions the bar too; ``greeks``: per group
    the Greeks of its last tick, shape (groups, len(CLOSE_FIELDS)).
    """
    ends = group_ends(starts, len(price))
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
    for j, name in enumerate(CLOSE_FIELDS):
        out[name] = greeks[:, j]
    return out


def as_priced(ticks: np.ndarray) -> np.ndarray:
    """``ticks`` as PRICED_TICK_DTYPE (TICK_DTYPE rows get NaN Greeks)."""
    if ticks.dtype == PRICED_TICK_DTYPE:
        return ticks
    out = np.empty(len(ticks), PRICED_TICK_DTYPE)
    names = ticks.dtype.names or ()
    for name in PRICED_TICK_DTYPE.names:
        out[name] = ticks[name] if name in names else np.nan
    return out
