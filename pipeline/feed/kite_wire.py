"""Kite's binary market-data wire format: modes, packet layouts, divisors, heartbeats.

Shared by the decoder (``pipeline.feed.kite_codec``) and the encoder
(``pipeline.feed.kite_encode``); the layouts are those of ``kite-protocol.md``.
"""

from __future__ import annotations

import numpy as np

from pipeline.records.ticks import MODE_FULL, MODE_LTP, MODE_QUOTE  # noqa: F401 - the wire's modes are the ticks'

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
DIVISOR_TABLE = np.full(256, 100.0)
DIVISOR_TABLE[SEGMENT_CDS] = 1e7
DIVISOR_TABLE[SEGMENT_BCD] = 1e4
DIVISOR_TABLE[SEGMENT_NCO] = 1e4

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
UINT32_MAX = 2**32 - 1

# ---------------------------------------------------------------- wire layouts
# Wire field names: prices are ">i4", everything else ">u4" (depth orders ">u2").
# Each layout maps a wire field to the KITE_TICK_DTYPE field it fills.

DEPTH_DTYPE = np.dtype([("quantity", ">u4"), ("price", ">i4"), ("orders", ">u2"), ("pad", "V2")])

WIRE_FIELDS: dict[int, list[tuple[str, str]]] = {
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
WIRE_FIELDS[PACKET_INDEX_FULL] = WIRE_FIELDS[PACKET_INDEX_QUOTE] + [("exchange_timestamp", ">u4")]
WIRE_FIELDS[PACKET_FULL] = WIRE_FIELDS[PACKET_QUOTE] + [
    ("last_trade_time", ">u4"), ("oi", ">u4"), ("oi_day_high", ">u4"), ("oi_day_low", ">u4"),
    ("exchange_timestamp", ">u4"), ("depth", DEPTH_DTYPE, (10,)),
]

# packet dtype (no length prefix) and "framed" dtype (uint16 length prefix + packet)
PACKET_DTYPE = {L: np.dtype(f) for L, f in WIRE_FIELDS.items()}
FRAMED_DTYPE = {L: np.dtype([("length", ">u2")] + f) for L, f in WIRE_FIELDS.items()}
for _L in PACKET_LENGTHS:
    assert PACKET_DTYPE[_L].itemsize == _L, _L
    assert FRAMED_DTYPE[_L].itemsize == _L + 2, _L

# the same records as opaque bytes, for fast gathers and scatters
FRAMED_RECORD = {L: np.dtype((np.void, L + 2)) for L in PACKET_LENGTHS}
KITE_RECORD = np.dtype((np.void, KITE_TICK_DTYPE.itemsize))

MODE_OF_LENGTH = {
    PACKET_LTP: MODE_LTP, PACKET_INDEX_QUOTE: MODE_QUOTE, PACKET_INDEX_FULL: MODE_FULL,
    PACKET_QUOTE: MODE_QUOTE, PACKET_FULL: MODE_FULL,
}
PRICE_FIELDS = {
    L: tuple(f[0] for f in fs if f[1] == ">i4" and f[0] != "index_change") for L, fs in WIRE_FIELDS.items()
}
INT_FIELDS = {
    L: tuple(f[0] for f in fs if f[1] == ">u4" and f[0] != "instrument_token") for L, fs in WIRE_FIELDS.items()
}
HAS_CLOSE = {L: "close" in PRICE_FIELDS[L] for L in PACKET_LENGTHS}


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
    return np.asarray(DIVISOR_TABLE[seg])


HEARTBEAT = b"\x00"  # what the simulator sends; Kite's is one byte of any value


def is_heartbeat(data: bytes) -> bool:
    """The heartbeat rule: a binary message shorter than 2 bytes (Kite sends a 1-byte one about once
    a second). An empty message also matches; decoders count it as an ``empty`` frame error."""
    return len(data) < 2


# ---------------------------------------------------------------------- decode
