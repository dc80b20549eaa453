"""Building bars from grouped ticks: the arithmetic of one bar, for many bars at once.

Pure functions over numpy arrays (the BarBuilder of the design: it computes a
bar from its ticks and says nothing about when a bar closes; that is
``pipeline.core.bars.watermark`` and ``pipeline.core.bars.aggregator``).
Definitions (DESIGN.md): OHLC of ``last_price`` in event order; volume the sum
of the ticks' increments of cumulative volume; OI at the last tick and its
open/high/low; VWAP over the increments (NaN when volume is 0); Greeks of the
last tick.
"""

from __future__ import annotations

import numpy as np

from pipeline.records.bars import BAR_DTYPE
from pipeline.records.ticks import GREEK_FIELDS, PRICED_TICK_DTYPE

N_GREEKS = len(GREEK_FIELDS)


def volume_increments(cum: np.ndarray, prev_cum: np.ndarray, has_prev: np.ndarray) -> np.ndarray:
    """Volume increment of each tick: cum - previous tick's cum, 0 without a previous tick or on a reset."""
    return np.where(has_prev, np.maximum(cum - prev_cum, 0), 0)


def group_ends(starts: np.ndarray, n: int) -> np.ndarray:
    """Index of the last row of each group ``[starts[i], starts[i+1])`` of ``n`` rows."""
    ends = np.empty(len(starts), np.int64)
    ends[:-1] = starts[1:] - 1
    ends[-1] = n - 1
    return ends


def aggregate_groups(
    price: np.ndarray,
    cum: np.ndarray,
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
    the Greeks of its last tick, shape (groups, len(GREEK_FIELDS)).
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
    for j, name in enumerate(GREEK_FIELDS):
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
