"""Zerodha Kite WebSocket binary frames <-> numpy structured arrays.

Protocol: ``/work/shared/kite-protocol.md`` sections 3 and 4. One binary
WebSocket message (a *frame*) is::

    uint16 N | uint16 L1 | packet 1 (L1 bytes) | uint16 L2 | packet 2 | ...

all integers big-endian. The packet length gives its layout:

======  ========  =====  =============================================
length  kind      mode   layout
======  ========  =====  =============================================
8       any       ltp    token, last
28      index     quote  token, last, high, low, open, close, change
32      index     full   index quote + exchange timestamp
44      tradable  quote  token, last, ltq, avg, volume, buy qty, sell qty,
                         open, high, low, close
184     tradable  full   quote + last trade time, oi, oi high, oi low,
                         exchange timestamp, 10 x depth (qty, price,
                         orders u16, 2 bytes padding)
======  ========  =====  =============================================

Decoding (:func:`decode_frame`) produces one ``KITE_TICK_DTYPE`` row per
packet, in packet order, with the same values ``KiteTicker._parse_binary``
(kiteconnect 5.2.2) produces:

- ``tradable`` is ``segment != 9`` (``segment = token & 0xFF``) and ``mode`` is
  taken from the packet length, exactly like KiteTicker (a 28/32 byte packet is
  read with the index layout whatever its token says).
- prices are read as **signed** int32 and divided by :func:`price_divisor`
  (KiteTicker reads them unsigned; both agree below 2**31);
  quantities, volume, OI and timestamps are uint32.
- ``change`` is KiteTicker's percentage ``(last - close) * 100 / close``
  (0 when close is 0, and for ltp packets). The index packet's own change
  field (offset 24) is ignored, as both official clients do.
- timestamps stay raw epoch seconds (KiteTicker makes naive local datetimes).
- every field a mode does not carry is 0.

It is vectorised: the payload is viewed through big-endian structured dtypes
(``np.frombuffer``), one per packet layout, and decoded field by field
(~40 numpy calls for a full-mode group, whatever its size):

- all packets of one length (checked with one strided compare of the length
  fields): a zero-copy view, no Python loop;
- mixed lengths: the header is walked run by run (a run = consecutive packets
  of equal length; long runs are measured with galloping strided numpy views,
  so the Python loop is per run, not per packet), then each length group is
  decoded at once: a contiguous run in place, a scattered group gathered with
  one fancy index over a record view at every byte offset, its rows scattered
  back as opaque records;
- tiny frames/groups (<= 3 packets of one length, mixed frames <= 6 packets)
  are read with ``struct`` instead, where numpy's per-call overhead would
  dominate. Both paths do the same IEEE arithmetic (tests check byte equality).

A frame that fails validation yields no rows at all (validation completes
before any decoding).

Accepted quirk (same as KiteTicker): a 28/32-byte packet for a non-index token
decodes as ``tradable=True`` with the index layout, and a 44/184-byte packet
for an index token as ``tradable=False``; :func:`encode_frame` picks the
layout from ``tradable``, so such rows re-encode with the other layout.

:func:`encode_frame` is the exact inverse (used by the simulator and the
tests): the packet length comes from ``(tradable, mode)``; prices are
multiplied by the divisor and rounded to the nearest integer. The index
change field (offset 24), which decoders ignore, is written as
``round((last - close) * 100 / close * 100)`` i.e. in units of 0.01 % (the
one known live sample, -36 for -0.36 %, fits that), 0 when close is 0.

:class:`FrameDecoder` wraps :func:`decode_frame` for the ingestor: it never
raises, returns ``None`` for heartbeats and invalid frames and counts them.
"""

from __future__ import annotations

import struct

import numpy as np

MODE_LTP, MODE_QUOTE, MODE_FULL = 1, 2, 3

SEGMENT_CDS = 3
SEGMENT_BCD = 6
SEGMENT_INDICES = 9
SEGMENT_NCO = 12

KITE_TICK_DTYPE = np.dtype([
    ("instrument_token", "<u4"), ("tradable", "?"), ("mode", "u1"),
    ("last_price", "<f8"), ("last_traded_quantity", "<u4"), ("average_traded_price", "<f8"),
    ("volume_traded", "<u4"), ("total_buy_quantity", "<u4"), ("total_sell_quantity", "<u4"),
    ("open", "<f8"), ("high", "<f8"), ("low", "<f8"), ("close", "<f8"), ("change", "<f8"),
    ("last_trade_time", "<i8"), ("oi", "<u4"), ("oi_day_high", "<u4"), ("oi_day_low", "<u4"),
    ("exchange_timestamp", "<i8"),
    ("bid_price", "<f8", (5,)), ("bid_quantity", "<u4", (5,)), ("bid_orders", "<u2", (5,)),
    ("ask_price", "<f8", (5,)), ("ask_quantity", "<u4", (5,)), ("ask_orders", "<u2", (5,)),
])

PACKET_LTP = 8
PACKET_INDEX_QUOTE = 28
PACKET_INDEX_FULL = 32
PACKET_QUOTE = 44
PACKET_FULL = 184
PACKET_LENGTHS = (PACKET_LTP, PACKET_INDEX_QUOTE, PACKET_INDEX_FULL, PACKET_QUOTE, PACKET_FULL)

MAX_PACKETS = 0xFFFF

# price divisor by segment id (token & 0xFF)
_DIVISOR_TABLE = np.full(256, 100.0)
_DIVISOR_TABLE[SEGMENT_CDS] = 1e7
_DIVISOR_TABLE[SEGMENT_BCD] = 1e4
_DIVISOR_TABLE[SEGMENT_NCO] = 1e4

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_UINT32_MAX = 2**32 - 1

# ---------------------------------------------------------------- wire layouts
# Wire field names: prices are ">i4", everything else ">u4" (depth orders ">u2").
# Each layout maps a wire field to the KITE_TICK_DTYPE field it fills.

_DEPTH_DTYPE = np.dtype([("quantity", ">u4"), ("price", ">i4"), ("orders", ">u2"), ("pad", "V2")])

_WIRE_FIELDS: dict[int, list[tuple[str, str]]] = {
    PACKET_LTP: [("instrument_token", ">u4"), ("last_price", ">i4")],
    PACKET_INDEX_QUOTE: [
        ("instrument_token", ">u4"), ("last_price", ">i4"), ("high", ">i4"), ("low", ">i4"),
        ("open", ">i4"), ("close", ">i4"), ("index_change", ">i4"),
    ],
    PACKET_QUOTE: [
        ("instrument_token", ">u4"), ("last_price", ">i4"), ("last_traded_quantity", ">u4"),
        ("average_traded_price", ">i4"), ("volume_traded", ">u4"), ("total_buy_quantity", ">u4"),
        ("total_sell_quantity", ">u4"), ("open", ">i4"), ("high", ">i4"), ("low", ">i4"), ("close", ">i4"),
    ],
}
_WIRE_FIELDS[PACKET_INDEX_FULL] = _WIRE_FIELDS[PACKET_INDEX_QUOTE] + [("exchange_timestamp", ">u4")]
_WIRE_FIELDS[PACKET_FULL] = _WIRE_FIELDS[PACKET_QUOTE] + [
    ("last_trade_time", ">u4"), ("oi", ">u4"), ("oi_day_high", ">u4"), ("oi_day_low", ">u4"),
    ("exchange_timestamp", ">u4"), ("depth", _DEPTH_DTYPE, (10,)),
]

# packet dtype (no length prefix) and "framed" dtype (uint16 length prefix + packet)
_PACKET_DTYPE = {L: np.dtype(f) for L, f in _WIRE_FIELDS.items()}
_FRAMED_DTYPE = {L: np.dtype([("length", ">u2")] + f) for L, f in _WIRE_FIELDS.items()}
for _L in PACKET_LENGTHS:
    assert _PACKET_DTYPE[_L].itemsize == _L, _L
    assert _FRAMED_DTYPE[_L].itemsize == _L + 2, _L

# the same records as opaque bytes, for fast gathers and scatters
_FRAMED_RECORD = {L: np.dtype((np.void, L + 2)) for L in PACKET_LENGTHS}
_KITE_RECORD = np.dtype((np.void, KITE_TICK_DTYPE.itemsize))

_MODE_OF_LENGTH = {
    PACKET_LTP: MODE_LTP, PACKET_INDEX_QUOTE: MODE_QUOTE, PACKET_INDEX_FULL: MODE_FULL,
    PACKET_QUOTE: MODE_QUOTE, PACKET_FULL: MODE_FULL,
}
_PRICE_FIELDS = {
    L: tuple(f[0] for f in fs if f[1] == ">i4" and f[0] != "index_change") for L, fs in _WIRE_FIELDS.items()
}
_INT_FIELDS = {
    L: tuple(f[0] for f in fs if f[1] == ">u4" and f[0] != "instrument_token") for L, fs in _WIRE_FIELDS.items()
}
_HAS_CLOSE = {L: "close" in _PRICE_FIELDS[L] for L in PACKET_LENGTHS}


class FrameError(ValueError):
    """An invalid Kite binary frame. ``reason`` is a short metric label."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


def price_divisor(instrument_token) -> np.ndarray:
    """Price divisor per token: CDS (3) 1e7, BCD (6) and NCO (12) 1e4, otherwise 100.

    Accepts a scalar or an array of tokens; returns float64 (a 0-d array for a scalar).
    """
    seg = np.asarray(instrument_token).astype(np.int64, copy=False) & 0xFF
    return np.asarray(_DIVISOR_TABLE[seg])


def is_heartbeat(data: bytes) -> bool:
    """A binary message shorter than 2 bytes (Kite sends a 1-byte one about once a second)."""
    return len(data) < 2


# ---------------------------------------------------------------------- decode


def _fill(p: np.ndarray, L: int, out: np.ndarray) -> None:
    """Decode packets ``p`` (a ``_PACKET_DTYPE[L]``/``_FRAMED_DTYPE[L]`` array) into zeroed rows ``out``."""
    out["instrument_token"] = p["instrument_token"]
    seg = out["instrument_token"] & 0xFF
    div = _DIVISOR_TABLE[seg]
    out["tradable"] = seg != SEGMENT_INDICES
    out["mode"] = _MODE_OF_LENGTH[L]
    for name in _PRICE_FIELDS[L]:
        out[name] = p[name] / div
    for name in _INT_FIELDS[L]:
        out[name] = p[name]
    if _HAS_CLOSE[L]:
        last = out["last_price"]
        close = out["close"]
        nz = close != 0
        if nz.all():
            out["change"] = (last - close) * 100 / close
        elif nz.any():
            change = np.zeros(len(out))
            np.divide((last - close) * 100, close, out=change, where=nz)
            out["change"] = change
    if L == PACKET_FULL:
        depth = p["depth"]
        q = depth["quantity"]
        pr = depth["price"] / div[:, None]
        o = depth["orders"]
        out["bid_quantity"] = q[:, :5]
        out["ask_quantity"] = q[:, 5:]
        out["bid_price"] = pr[:, :5]
        out["ask_price"] = pr[:, 5:]
        out["bid_orders"] = o[:, :5]
        out["ask_orders"] = o[:, 5:]


# ------------------------------------------------- scalar path for tiny groups
# numpy costs ~0.5-1 us per call whatever the size, so a group of one or two
# packets (a 1-packet frame, the index packet in an index+options frame) is
# cheaper to read with struct. Same arithmetic, same IEEE results.

_SMALL_GROUP = 3  # packets of one length: at most this many take the scalar path
_SMALL_FRAME = 6  # mixed frames of at most this many packets are read entirely with struct
_STRUCT = {
    PACKET_LTP: struct.Struct(">Ii"),
    PACKET_INDEX_QUOTE: struct.Struct(">I5i4x"),
    PACKET_INDEX_FULL: struct.Struct(">I5i4xI"),
    PACKET_QUOTE: struct.Struct(">IiIiIIIiiii"),
    PACKET_FULL: struct.Struct(">IiIiIIIiiii5I" + "IiH2x" * 10),
}
_DIVISORS = [float(d) for d in _DIVISOR_TABLE]
_Z5F = (0.0,) * 5
_Z5 = (0,) * 5


def _row(data, off: int, L: int) -> tuple:
    """One packet at ``off`` (first byte after its length field) -> a ``KITE_TICK_DTYPE`` row tuple."""
    v = _STRUCT[L].unpack_from(data, off)
    tok = v[0]
    seg = tok & 0xFF
    div = _DIVISORS[seg]
    tradable = seg != SEGMENT_INDICES
    last = v[1] / div
    if L == PACKET_LTP:
        return (tok, tradable, MODE_LTP, last, 0, 0.0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0, 0, 0,
                _Z5F, _Z5, _Z5, _Z5F, _Z5, _Z5)
    if L == PACKET_INDEX_QUOTE or L == PACKET_INDEX_FULL:
        high, low, open_, close = v[2] / div, v[3] / div, v[4] / div, v[5] / div
        change = (last - close) * 100 / close if close != 0 else 0.0
        if L == PACKET_INDEX_QUOTE:
            mode, ets = MODE_QUOTE, 0
        else:
            mode, ets = MODE_FULL, v[6]
        return (tok, tradable, mode, last, 0, 0.0, 0, 0, 0, open_, high, low, close, change, 0, 0, 0, 0, ets,
                _Z5F, _Z5, _Z5, _Z5F, _Z5, _Z5)
    close = v[10] / div
    change = (last - close) * 100 / close if close != 0 else 0.0
    head = (tok, tradable, MODE_QUOTE if L == PACKET_QUOTE else MODE_FULL, last, v[2], v[3] / div,
            v[4], v[5], v[6], v[7] / div, v[8] / div, v[9] / div, close, change)
    if L == PACKET_QUOTE:
        return head + (0, 0, 0, 0, 0, _Z5F, _Z5, _Z5, _Z5F, _Z5, _Z5)
    d = v[16:]
    return head + (v[11], v[12], v[13], v[14], v[15],
                   (d[1] / div, d[4] / div, d[7] / div, d[10] / div, d[13] / div),
                   d[0:15:3], d[2:15:3],
                   (d[16] / div, d[19] / div, d[22] / div, d[25] / div, d[28] / div),
                   d[15:30:3], d[17:30:3])


def _u16(data, j: int) -> int:
    return (data[j] << 8) | data[j + 1]


_PY_RUN = 8  # extend a run this far in plain Python before switching to strided numpy checks


def _run_length(data, j: int, L: int, maxk: int) -> int:
    """Number (>= 1, <= maxk) of consecutive packets of length ``L`` starting at offset ``j``.

    ``maxk`` must not exceed the number of whole ``L + 2`` byte strides left in
    the data. Short runs are followed in Python; long ones in galloping
    windows of a strided ``>u2`` view over the length fields, so the cost is
    proportional to the run, whatever the frame looks like.
    """
    stride = L + 2
    k = 1
    pos = j + stride
    limit = min(maxk, _PY_RUN)
    while k < limit and ((data[pos] << 8) | data[pos + 1]) == L:
        k += 1
        pos += stride
    if k < limit or k == maxk:
        return k
    window = 32
    while k < maxk:
        cnt = min(window, maxk - k)
        lens = np.ndarray((cnt,), dtype=">u2", buffer=data, offset=j + k * stride, strides=(stride,))
        bad = np.flatnonzero(lens != L)
        if bad.size:
            return k + int(bad[0])
        k += cnt
        window *= 4
    return k


def _walk(data, size: int, n: int, j: int = 2, strict: bool = True):
    """Walk the frame header from offset ``j`` over ``n`` packets, run by run.

    Returns ``(offsets, lengths, counts, end, packets)``: per run of equal-length
    packets the offset of its first length field, the packet length and the
    number of packets; then the offset after the last packet and the packets
    walked. Raises FrameError for an unknown length or a truncated packet. With
    ``strict=False`` (used to classify trailing bytes) it stops quietly where
    the data stops parsing.
    """
    offsets: list[int] = []
    lengths: list[int] = []
    counts: list[int] = []
    i = 0
    while i < n:
        if j + 2 > size:
            if not strict:
                break
            if j == size:
                raise FrameError(f"count mismatch: header says {n} packets, frame holds {i}", "count_mismatch")
            raise FrameError(
                f"truncated packet {i + 1}: length field needs 2 bytes, {size - j} left", "truncated")
        L = (data[j] << 8) | data[j + 1]
        if L not in _MODE_OF_LENGTH:
            if not strict:
                break
            raise FrameError(f"packet {i + 1}: unknown packet length {L} at offset {j}", "bad_length")
        stride = L + 2
        room = (size - j) // stride
        if room == 0:
            if not strict:
                break
            raise FrameError(f"truncated packet {i + 1}: needs {L} bytes, {size - j - 2} left", "truncated")
        nj = j + stride
        if room == 1 or i + 1 == n or ((data[nj] << 8) | data[nj + 1]) != L:
            offsets.append(j)
            lengths.append(L)
            counts.append(1)
            j = nj
            i += 1
            continue
        k = _run_length(data, j, L, min(n - i, room))
        offsets.append(j)
        lengths.append(L)
        counts.append(k)
        j += k * stride
        i += k
    return offsets, lengths, counts, j, i


def _trailing_error(data, size: int, n: int, j: int) -> FrameError:
    _, _, _, end, extra = _walk(data, size, MAX_PACKETS + 1, j, strict=False)
    if extra and end == size:
        return FrameError(f"count mismatch: header says {n} packets, frame holds {n + extra}", "count_mismatch")
    return FrameError(f"{size - j} trailing bytes after {n} packets", "trailing_bytes")


def decode_frame(data: bytes) -> np.ndarray:
    """Decode one binary WebSocket message into ``KITE_TICK_DTYPE`` rows, in packet order.

    Raises :class:`FrameError` (with ``.reason``) for an empty message, a
    heartbeat (shorter than 2 bytes), a count that does not match the packets,
    a truncated packet, an unknown packet length or trailing garbage. A frame
    with a packet count of 0 and nothing after it decodes to an empty array.
    """
    size = len(data)
    if size < 2:
        if size == 0:
            raise FrameError("empty frame", "empty")
        raise FrameError("heartbeat (1-byte message), not a data frame", "heartbeat")
    if not isinstance(data, (bytes, bytearray)):
        data = memoryview(data).cast("B")
    n = _u16(data, 0)
    if n == 0:
        if size != 2:
            raise _trailing_error(data, size, 0, 2)
        return np.zeros(0, dtype=KITE_TICK_DTYPE)
    if size == 2:
        raise FrameError(f"count mismatch: header says {n} packets, frame holds 0", "count_mismatch")
    if size == 3:
        raise FrameError(f"truncated packet 1: length field needs 2 bytes, {size - 2} left", "truncated")

    # fast path: every packet has the length of the first one
    L = _u16(data, 2)
    if L in _MODE_OF_LENGTH and size == 2 + n * (L + 2):
        if n <= _SMALL_GROUP:
            stride = L + 2
            if all(((data[j] << 8) | data[j + 1]) == L for j in range(2 + stride, size, stride)):
                return np.array([_row(data, j, L) for j in range(4, size, stride)], dtype=KITE_TICK_DTYPE)
        p = np.frombuffer(data, dtype=_FRAMED_DTYPE[L], count=n, offset=2)
        if n == 1 or (p["length"] == L).all():
            out = np.zeros(n, dtype=KITE_TICK_DTYPE)
            _fill(p, L, out)
            return out

    run_offsets, run_lengths, run_counts, j, _ = _walk(data, size, n)
    if j != size:
        raise _trailing_error(data, size, n, j)
    if n <= _SMALL_FRAME:
        return np.array([_row(data, off + 2 + m * (L + 2), L)
                         for off, L, k in zip(run_offsets, run_lengths, run_counts) for m in range(k)],
                        dtype=KITE_TICK_DTYPE)
    out = np.zeros(n, dtype=KITE_TICK_DTYPE)
    if len(run_counts) == 1:  # one length only: already taken by the fast path, kept as a safety net
        L = run_lengths[0]
        _fill(np.frombuffer(data, dtype=_FRAMED_DTYPE[L], count=n, offset=2), L, out)
        return out

    # per packet: offset of its length field and its length, from the runs (vectorised)
    counts = np.array(run_counts)
    lengths = np.repeat(np.array(run_lengths), counts)
    starts = np.repeat(np.array(run_offsets), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    offsets = starts + (np.arange(n) - first) * (lengths + 2)
    out_records = out.view(_KITE_RECORD)
    for L in set(run_lengths):
        rows = np.flatnonzero(lengths == L)
        stride = L + 2
        if len(rows) <= _SMALL_GROUP:
            for r in rows.tolist():
                out[r] = _row(data, int(offsets[r]) + 2, L)
            continue
        if len(rows) == rows[-1] - rows[0] + 1:  # one contiguous run of this length: zero-copy view
            packets = np.frombuffer(data, dtype=_FRAMED_DTYPE[L], count=len(rows), offset=int(offsets[rows[0]]))
            _fill(packets, L, out[rows[0]:rows[-1] + 1])
            continue
        # a record view at every byte offset, gathered at the packet offsets (one memcpy per packet)
        at_every_byte = np.ndarray((size - stride + 1,), dtype=_FRAMED_RECORD[L], buffer=data, strides=(1,))
        packets = at_every_byte[offsets[rows]].view(_FRAMED_DTYPE[L])
        tmp = np.zeros(len(rows), dtype=KITE_TICK_DTYPE)
        _fill(packets, L, tmp)
        out_records[rows] = tmp.view(_KITE_RECORD)  # plain record copies (much faster than structured assignment)
    return out


# ---------------------------------------------------------------------- encode


def _to_wire_prices(values: np.ndarray, div: np.ndarray, what: str) -> np.ndarray:
    """Rupees -> scaled int64 (rounded to nearest), checking the int32 wire range (NaN/inf fail too)."""
    scaled = np.rint(values * div)
    if not ((scaled >= _INT32_MIN) & (scaled <= _INT32_MAX)).all():
        raise ValueError(f"{what}: price not representable as int32 on the wire")
    return scaled.astype(np.int64)


def _to_wire_u32(values: np.ndarray, name: str) -> np.ndarray:
    """int64 timestamps -> checked uint32 range (the uint32 dtype fields need no check)."""
    if values.dtype.itemsize > 4 or values.dtype.kind == "i":
        if not ((values >= 0) & (values <= _UINT32_MAX)).all():
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
    """Ticks of one packet length -> ``_FRAMED_DTYPE[L]`` array (length prefix included)."""
    n = len(t)
    p = np.zeros(n, dtype=_FRAMED_DTYPE[L])
    p["length"] = L
    p["instrument_token"] = t["instrument_token"]
    div = _DIVISOR_TABLE[t["instrument_token"] & 0xFF]
    names = _PRICE_FIELDS[L]
    # all prices of the layout scaled and range-checked as one (n, k) matrix
    columns = [t[name] for name in names]
    if L == PACKET_FULL:
        columns += [t["bid_price"][:, i] for i in range(5)] + [t["ask_price"][:, i] for i in range(5)]
    scaled = _to_wire_prices(np.column_stack(columns), div[:, None], "prices")
    for k, name in enumerate(names):
        p[name] = scaled[:, k]
    for name in _INT_FIELDS[L]:
        p[name] = _to_wire_u32(t[name], name)
    if L == PACKET_INDEX_QUOTE or L == PACKET_INDEX_FULL:
        last = scaled[:, 0].astype(np.float64)
        close = scaled[:, names.index("close")].astype(np.float64)
        change = np.zeros(n)
        np.divide((last - close) * 10000, close, out=change, where=close != 0)
        p["index_change"] = np.clip(np.rint(change), _INT32_MIN, _INT32_MAX).astype(np.int64)
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
    records = np.ascontiguousarray(ticks).view(_KITE_RECORD)
    for L in np.unique(lengths).tolist():
        idx = np.flatnonzero(lengths == L)
        packed = _encode_group(records[idx].view(KITE_TICK_DTYPE), L)
        # a writable record view at every byte offset, scattered at the packet offsets
        at_every_byte = np.ndarray((size - L - 1,), dtype=_FRAMED_RECORD[L], buffer=out, strides=(1,))
        at_every_byte[starts[idx]] = packed.view(_FRAMED_RECORD[L])
    return out.tobytes()


# ------------------------------------------------------------- ingest wrapper


class FrameDecoder:
    """Hot-path decoder for the ingestor: never raises, counts what it sees.

    ``decode`` returns the rows of a valid frame, or ``None`` for a heartbeat
    (1-byte message, counted in ``heartbeats``) and for an invalid frame
    (counted in ``errors`` by reason: ``empty``, ``truncated``,
    ``bad_length``, ``count_mismatch``, ``trailing_bytes``, ``internal``).
    An invalid frame yields nothing at all, never part of its ticks.
    ``last_error`` holds the message of the latest invalid frame for logging.
    """

    def __init__(self) -> None:
        self.frames = 0
        self.packets = 0
        self.heartbeats = 0
        self.errors: dict[str, int] = {}
        self.last_error: str | None = None
        self._reported: dict[str, int] = {}

    def _error(self, reason: str, message: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1
        self.last_error = message

    def decode(self, data: bytes) -> np.ndarray | None:
        try:
            size = len(data)
            if size == 1:
                self.heartbeats += 1
                return None
            if size == 0:
                self._error("empty", "empty frame")
                return None
            rows = decode_frame(data)
        except FrameError as exc:
            self._error(exc.reason, str(exc))
            return None
        except Exception as exc:  # noqa: BLE001 - the hot path must never raise
            self._error("internal", f"{type(exc).__name__}: {exc}")
            return None
        self.frames += 1
        self.packets += len(rows)
        return rows

    def take_new_errors(self) -> dict[str, int]:
        """Errors counted since the previous call, by reason (only non-zero deltas)."""
        delta = {r: c - self._reported.get(r, 0) for r, c in self.errors.items() if c != self._reported.get(r, 0)}
        self._reported = dict(self.errors)
        return delta


__all__ = [
    "KITE_TICK_DTYPE",
    "MODE_FULL",
    "MODE_LTP",
    "MODE_QUOTE",
    "PACKET_LENGTHS",
    "FrameDecoder",
    "FrameError",
    "decode_frame",
    "encode_frame",
    "is_heartbeat",
    "price_divisor",
]
