"""Kite binary frames from ``KITE_TICK_DTYPE`` rows: the exact inverse of ``pipeline.feed.kite_codec``.

Used by the simulator and the tests. The packet length comes from
``(tradable, mode)``; prices are multiplied by the divisor and rounded to the
nearest integer; the index change field is written in units of 0.01 %.
"""

from __future__ import annotations

import numpy as np

from pipeline.feed.kite_wire import (
    DIVISOR_TABLE,
    FRAMED_DTYPE,
    FRAMED_RECORD,
    INT32_MAX,
    INT32_MIN,
    INT_FIELDS,
    KITE_RECORD,
    KITE_TICK_DTYPE,
    MAX_PACKETS,
    MODE_FULL,
    MODE_LTP,
    MODE_QUOTE,
    PACKET_FULL,
    PACKET_INDEX_FULL,
    PACKET_INDEX_QUOTE,
    PACKET_LTP,
    PACKET_QUOTE,
    PRICE_FIELDS,
    UINT32_MAX,
)


def _to_wire_prices(values: np.ndarray, div: np.ndarray, what: str) -> np.ndarray:
    """Rupees -> scaled int64 (rounded to nearest), checking the int32 wire range (NaN/inf fail too)."""
    scaled = np.rint(values * div)
    if not ((scaled >= INT32_MIN) & (scaled <= INT32_MAX)).all():
        raise ValueError(f"{what}: price not representable as int32 on the wire")
    return scaled.astype(np.int64)


def _to_wire_u32(values: np.ndarray, name: str) -> np.ndarray:
    """int64 timestamps -> checked uint32 range (the uint32 dtype fields need no check)."""
    if values.dtype.itemsize > 4 or values.dtype.kind == "i":
        if not ((values >= 0) & (values <= UINT32_MAX)).all():
            raise ValueError(f"{name}: value out of uint32 range")
    return values


def _packet_lengths(ticks: np.ndarray) -> np.ndarray:
    mode = ticks["mode"]
    tradable = ticks["tradable"]
    bad = (mode < MODE_LTP) | (mode > MODE_FULL)
    if bad.any():
        raise ValueError(f"unknown mode {int(mode[np.flatnonzero(bad)[0]])} (expected 1 ltp, 2 quote, 3 full)")
    return np.select(
        [mode == MODE_LTP, (mode == MODE_QUOTE) & tradable, mode == MODE_QUOTE, tradable],
        [PACKET_LTP, PACKET_QUOTE, PACKET_INDEX_QUOTE, PACKET_FULL],
        PACKET_INDEX_FULL,
    )


def _encode_group(t: np.ndarray, L: int) -> np.ndarray:
    """Ticks of one packet length -> ``FRAMED_DTYPE[L]`` array (length prefix included)."""
    n = len(t)
    p = np.zeros(n, dtype=FRAMED_DTYPE[L])
    p["length"] = L
    p["instrument_token"] = t["instrument_token"]
    div = DIVISOR_TABLE[t["instrument_token"] & 0xFF]
    names = PRICE_FIELDS[L]
    # all prices of the layout scaled and range-checked as one (n, k) matrix
    columns = [t[name] for name in names]
    if L == PACKET_FULL:
        columns += [t["bid_price"][:, i] for i in range(5)] + [t["ask_price"][:, i] for i in range(5)]
    scaled = _to_wire_prices(np.column_stack(columns), div[:, None], "prices")
    for k, name in enumerate(names):
        p[name] = scaled[:, k]
    for name in INT_FIELDS[L]:
        p[name] = _to_wire_u32(t[name], name)
    if L == PACKET_INDEX_QUOTE or L == PACKET_INDEX_FULL:
        last = scaled[:, 0].astype(np.float64)
        close = scaled[:, names.index("close")].astype(np.float64)
        change = np.zeros(n)
        np.divide((last - close) * 10000, close, out=change, where=close != 0)
        p["index_change"] = np.clip(np.rint(change), INT32_MIN, INT32_MAX).astype(np.int64)
    if L == PACKET_FULL:
        depth = p["depth"]
        k = len(names)
        depth["price"] = scaled[:, k:k + 10]
        depth["quantity"][:, :5] = t["bid_quantity"]
        depth["quantity"][:, 5:] = t["ask_quantity"]
        depth["orders"][:, :5] = t["bid_orders"]
        depth["orders"][:, 5:] = t["ask_orders"]
    return p


def encode_frame(ticks: np.ndarray) -> bytes:
    """``KITE_TICK_DTYPE`` rows -> one binary frame (inverse of :func:`decode_frame`).

    Packet length from ``(tradable, mode)``: ltp 8, index quote 28, index full
    32, tradable quote 44, tradable full 184. Prices are multiplied by the
    segment divisor and rounded; fields the layout does not carry are not
    written. Raises ValueError for an unknown mode, more than 65535 rows, or
    a value that does not fit its wire type.
    """
    ticks = np.asarray(ticks)
    if ticks.dtype != KITE_TICK_DTYPE:
        raise TypeError(f"expected KITE_TICK_DTYPE rows, got {ticks.dtype}")
    ticks = ticks.reshape(-1)
    n = len(ticks)
    if n > MAX_PACKETS:
        raise ValueError(f"{n} packets do not fit one frame (max {MAX_PACKETS})")
    header = n.to_bytes(2, "big")
    if n == 0:
        return header
    lengths = _packet_lengths(ticks)
    first = int(lengths[0])
    if (lengths == first).all():
        return header + _encode_group(ticks, first).tobytes()
    strides = lengths + 2
    starts = 2 + np.concatenate(([0], np.cumsum(strides)[:-1]))
    size = 2 + int(strides.sum())
    out = np.empty(size, dtype=np.uint8)
    out[:2] = (n >> 8, n & 0xFF)
    records = np.ascontiguousarray(ticks).view(KITE_RECORD)
    for L in np.unique(lengths).tolist():
        idx = np.flatnonzero(lengths == L)
        packed = _encode_group(records[idx].view(KITE_TICK_DTYPE), L)
        # a writable record view at every byte offset, scattered at the packet offsets
        at_every_byte = np.ndarray((size - L - 1,), dtype=FRAMED_RECORD[L], buffer=out, strides=(1,))
        at_every_byte[starts[idx]] = packed.view(FRAMED_RECORD[L])
    return out.tobytes()


__all__ = ["encode_frame"]
