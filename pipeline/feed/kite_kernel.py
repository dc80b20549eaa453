"""A compiled (numba) walk of a Kite binary frame straight into ``KITE_TICK_DTYPE`` rows.

One pass over the bytes, any mix of packet lengths, no per-field numpy call: a
frame of a few dozen mixed packets (index, future, options: what a connection
delivers at each step) costs a couple of microseconds plus ~0.1 us a packet,
where the numpy path pays ~40 calls per length group whatever the size.

The values are those of ``kite_codec._row`` (the reference the tests compare
against): prices are the wire's big-endian int32 divided by the segment's
divisor, ``change`` is ``(last - close) * 100 / close`` (0 when close is 0),
``tradable`` is ``segment != 9``, the mode follows the packet length. On any
malformed input (count mismatch, truncated packet, unknown length, trailing
bytes) the kernel returns a negative code and writes nothing the caller keeps:
``kite_codec.decode_frame`` then takes its checked path, which raises the
precise :class:`FrameError`.
"""

from __future__ import annotations

import numba
import numpy as np

from pipeline.feed.kite_wire import (
    MODE_FULL,
    MODE_LTP,
    MODE_QUOTE,
    PACKET_FULL,
    PACKET_INDEX_FULL,
    PACKET_INDEX_QUOTE,
    PACKET_LTP,
    PACKET_QUOTE,
    SEGMENT_INDICES,
)

OK, MALFORMED = 0, -1


@numba.njit(cache=True, inline="always")
def _u32(b: np.ndarray, p: int) -> int:
    return (np.int64(b[p]) << 24) | (np.int64(b[p + 1]) << 16) | (np.int64(b[p + 2]) << 8) | np.int64(b[p + 3])


@numba.njit(cache=True, inline="always")
def _i32(b: np.ndarray, p: int) -> int:
    v = _u32(b, p)
    return v - 4294967296 if v >= 2147483648 else v


@numba.njit(cache=True)
def decode_into(b: np.ndarray, n: int, divisors: np.ndarray, out: np.ndarray) -> int:
    """Decode the ``n`` packets of frame bytes ``b`` into the zeroed rows ``out``; OK or MALFORMED."""
    size = b.shape[0]
    j = 2
    for i in range(n):
        if j + 2 > size:
            return MALFORMED
        length = (np.int64(b[j]) << 8) | np.int64(b[j + 1])
        p = j + 2
        if p + length > size:
            return MALFORMED
        if length != PACKET_LTP and length != PACKET_INDEX_QUOTE and length != PACKET_INDEX_FULL \
                and length != PACKET_QUOTE and length != PACKET_FULL:
            return MALFORMED
        row = out[i]
        token = _u32(b, p)
        seg = token & 0xFF
        div = divisors[seg]
        row.instrument_token = token
        row.tradable = seg != SEGMENT_INDICES
        row.last_price = _i32(b, p + 4) / div
        if length == PACKET_LTP:
            row.mode = MODE_LTP
        elif length == PACKET_INDEX_QUOTE or length == PACKET_INDEX_FULL:
            _index_fields(b, p, length, div, row)
        else:
            _quote_fields(b, p, div, row)
            if length == PACKET_FULL:
                _full_fields(b, p, div, row)
        j = p + length
    return OK if j == size else MALFORMED


@numba.njit(cache=True, inline="always")
def _index_fields(b: np.ndarray, p: int, length: int, div: float, row) -> None:  # noqa: ANN001
    row.high = _i32(b, p + 8) / div
    row.low = _i32(b, p + 12) / div
    row.open = _i32(b, p + 16) / div
    _close(b, p + 20, div, row)
    if length == PACKET_INDEX_QUOTE:
        row.mode = MODE_QUOTE
    else:
        row.mode = MODE_FULL
        row.exchange_timestamp = _u32(b, p + 28)


@numba.njit(cache=True, inline="always")
def _quote_fields(b: np.ndarray, p: int, div: float, row) -> None:  # noqa: ANN001
    row.mode = MODE_QUOTE
    row.last_traded_quantity = _u32(b, p + 8)
    row.average_traded_price = _i32(b, p + 12) / div
    row.volume_traded = _u32(b, p + 16)
    row.total_buy_quantity = _u32(b, p + 20)
    row.total_sell_quantity = _u32(b, p + 24)
    row.open = _i32(b, p + 28) / div
    row.high = _i32(b, p + 32) / div
    row.low = _i32(b, p + 36) / div
    _close(b, p + 40, div, row)


@numba.njit(cache=True, inline="always")
def _close(b: np.ndarray, at: int, div: float, row) -> None:  # noqa: ANN001
    """The close at byte ``at`` and the change against it (0 when the close is 0), as KiteTicker computes it."""
    close = _i32(b, at) / div
    row.close = close
    row.change = (row.last_price - close) * 100 / close if close != 0 else 0.0


@numba.njit(cache=True, inline="always")
def _full_fields(b: np.ndarray, p: int, div: float, row) -> None:  # noqa: ANN001
    row.mode = MODE_FULL
    row.last_trade_time = _u32(b, p + 44)
    row.oi = _u32(b, p + 48)
    row.oi_day_high = _u32(b, p + 52)
    row.oi_day_low = _u32(b, p + 56)
    row.exchange_timestamp = _u32(b, p + 60)
    for k in range(5):
        q = p + 64 + 12 * k
        row.bid_quantity[k] = _u32(b, q)
        row.bid_price[k] = _i32(b, q + 4) / div
        row.bid_orders[k] = (np.int64(b[q + 8]) << 8) | np.int64(b[q + 9])
        q = p + 124 + 12 * k
        row.ask_quantity[k] = _u32(b, q)
        row.ask_price[k] = _i32(b, q + 4) / div
        row.ask_orders[k] = (np.int64(b[q + 8]) << 8) | np.int64(b[q + 9])
