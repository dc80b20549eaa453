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

from pipeline.feed.kite_kernel import OK as KERNEL_OK
from pipeline.feed.kite_kernel import decode_into
from pipeline.feed.kite_wire import (
    DIVISOR_TABLE,
    FRAMED_DTYPE,
    FRAMED_RECORD,
    HAS_CLOSE,
    INT_FIELDS,
    KITE_RECORD,
    KITE_TICK_DTYPE,
    MAX_PACKETS,
    MODE_FULL,
    MODE_LTP,
    MODE_OF_LENGTH,
    MODE_QUOTE,
    PACKET_FULL,
    PACKET_INDEX_FULL,
    PACKET_INDEX_QUOTE,
    PACKET_LTP,
    PACKET_QUOTE,
    PRICE_FIELDS,
    SEGMENT_INDICES,
    FrameError,
    is_heartbeat,
)


def _fill(p: np.ndarray, L: int, out: np.ndarray) -> None:
    """Decode packets ``p`` (a ``PACKET_DTYPE[L]``/``FRAMED_DTYPE[L]`` array) into zeroed rows ``out``."""
    out["instrument_token"] = p["instrument_token"]
    seg = out["instrument_token"] & 0xFF
    div = DIVISOR_TABLE[seg]
    out["tradable"] = seg != SEGMENT_INDICES
    out["mode"] = MODE_OF_LENGTH[L]
    for name in PRICE_FIELDS[L]:
        out[name] = p[name] / div
    for name in INT_FIELDS[L]:
        out[name] = p[name]
    if HAS_CLOSE[L]:
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
_DIVISORS = [float(d) for d in DIVISOR_TABLE]
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
        if L not in MODE_OF_LENGTH:
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
    if size == 0:
        raise FrameError("empty frame", "empty")
    if is_heartbeat(data):
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
    if n > _SMALL_FRAME:  # the compiled walk; tiny frames are cheaper through struct
        out = np.zeros(n, dtype=KITE_TICK_DTYPE)
        if decode_into(np.frombuffer(data, dtype=np.uint8), n, DIVISOR_TABLE, out) == KERNEL_OK:
            return out
    # tiny frames, and every malformed one (the checked path raises the precise error)
    uniform = _decode_uniform(data, size, n)
    return uniform if uniform is not None else _decode_runs(data, size, n)


def warm_up_codec() -> None:
    """Compile the frame kernel (numba; cached on disk after the first time) before the first live frame."""
    frame = (_SMALL_FRAME + 1).to_bytes(2, "big") + (PACKET_LTP.to_bytes(2, "big") + bytes(PACKET_LTP)) * (
        _SMALL_FRAME + 1)
    decode_frame(frame)


def _decode_uniform(data, size: int, n: int) -> np.ndarray | None:
    """The fast path: every packet has the length of the first one (None when they do not)."""
    L = _u16(data, 2)
    if L not in MODE_OF_LENGTH or size != 2 + n * (L + 2):
        return None
    if n <= _SMALL_GROUP:
        stride = L + 2
        if all(((data[j] << 8) | data[j + 1]) == L for j in range(2 + stride, size, stride)):
            return np.array([_row(data, j, L) for j in range(4, size, stride)], dtype=KITE_TICK_DTYPE)
    p = np.frombuffer(data, dtype=FRAMED_DTYPE[L], count=n, offset=2)
    if n == 1 or (p["length"] == L).all():
        out = np.zeros(n, dtype=KITE_TICK_DTYPE)
        _fill(p, L, out)
        return out
    return None


def _decode_runs(data, size: int, n: int) -> np.ndarray:
    """Mixed packet lengths: walk the runs, then decode each length group at once."""
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
        _fill(np.frombuffer(data, dtype=FRAMED_DTYPE[L], count=n, offset=2), L, out)
        return out
    # per packet: offset of its length field and its length, from the runs (vectorised)
    counts = np.array(run_counts)
    lengths = np.repeat(np.array(run_lengths), counts)
    starts = np.repeat(np.array(run_offsets), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    offsets = starts + (np.arange(n) - first) * (lengths + 2)
    for L in set(run_lengths):
        _decode_group(data, size, np.flatnonzero(lengths == L), offsets, L, out)
    return out


def _decode_group(data, size: int, rows: np.ndarray, offsets: np.ndarray, L: int, out: np.ndarray) -> None:
    """Decode the packets of length ``L`` (frame rows ``rows``, length fields at ``offsets[rows]``) into ``out``."""
    stride = L + 2
    if len(rows) <= _SMALL_GROUP:
        for r in rows.tolist():
            out[r] = _row(data, int(offsets[r]) + 2, L)
        return
    if len(rows) == rows[-1] - rows[0] + 1:  # one contiguous run of this length: zero-copy view
        packets = np.frombuffer(data, dtype=FRAMED_DTYPE[L], count=len(rows), offset=int(offsets[rows[0]]))
        _fill(packets, L, out[rows[0]:rows[-1] + 1])
        return
    # a record view at every byte offset, gathered at the packet offsets (one memcpy per packet)
    at_every_byte = np.ndarray((size - stride + 1,), dtype=FRAMED_RECORD[L], buffer=data, strides=(1,))
    packets = at_every_byte[offsets[rows]].view(FRAMED_DTYPE[L])
    tmp = np.zeros(len(rows), dtype=KITE_TICK_DTYPE)
    _fill(packets, L, tmp)
    out.view(KITE_RECORD)[rows] = tmp.view(KITE_RECORD)  # plain record copies (much faster than structured assignment)


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
            if not data:
                self._error("empty", "empty frame")
                return None
            if is_heartbeat(data):
                self.heartbeats += 1
                return None
            rows = decode_frame(data)
            if not len(rows):
                self._error("no_packets", "a frame of 0 packets")
                return None
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


__all__ = ["FrameDecoder", "decode_frame"]
